/**
 * An HTTP relay in front of the real server that a test can make misbehave: answer 503,
 * stall, send garbage, or drop the connection, for the next few requests. Everything else is
 * forwarded as it came, so the answers a test finally gets are the real server's.
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type Fault =
  | { kind: "status"; status: number; body?: string; headers?: Record<string, string> }
  | { kind: "stall" }
  | { kind: "drop" };

export class FaultyProxy {
  readonly baseUrl: string;
  /** Every request seen, as `METHOD /path?query`. */
  readonly seen: string[] = [];
  readonly #server: Server;
  readonly #target: string;
  #faults: Fault[] = [];

  private constructor(server: Server, target: string) {
    this.#server = server;
    this.#target = target;
    this.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  static async start(target: string): Promise<FaultyProxy> {
    let proxy: FaultyProxy | undefined;
    const server = createServer((request, response) => void proxy!.#handle(request, response));
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    proxy = new FaultyProxy(server, target);
    return proxy;
  }

  /** The next requests meet these faults, one each, in order. */
  inject(...faults: Fault[]): void {
    this.#faults.push(...faults);
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((done) => this.#server.close(() => done()));
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    this.seen.push(`${request.method} ${request.url}`);
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const fault = this.#faults.shift();
    if (fault?.kind === "stall") return; // never answers
    if (fault?.kind === "drop") {
      request.socket.destroy();
      return;
    }
    if (fault?.kind === "status") {
      response.writeHead(fault.status, fault.headers ?? {});
      response.end(fault.body ?? "");
      return;
    }
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) {
      if (typeof value === "string" && name !== "host" && name !== "connection") headers[name] = value;
    }
    const init: RequestInit = { method: request.method ?? "GET", headers };
    if (chunks.length > 0) init.body = Buffer.concat(chunks);
    const answer = await fetch(`${this.#target}${request.url}`, init);
    const out: Record<string, string> = {};
    answer.headers.forEach((value, name) => {
      if (name !== "content-length" && name !== "transfer-encoding" && name !== "connection") out[name] = value;
    });
    response.writeHead(answer.status, out);
    response.end(Buffer.from(await answer.arrayBuffer()));
  }
}
