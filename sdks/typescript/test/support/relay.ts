/**
 * A TCP relay in front of the server that counts connections and can be cut (every
 * connection dropped, new ones refused) and restored: a network outage on demand.
 */

import { connect, createServer, type Server, type Socket } from "node:net";

export class TcpRelay {
  /** Connections accepted so far (refused ones while cut are not counted). */
  connections = 0;
  readonly #server: Server;
  readonly #open = new Set<Socket>();
  #targetPort: number;
  #cut = false;

  private constructor(server: Server, targetPort: number) {
    this.#server = server;
    this.#targetPort = targetPort;
  }

  static async start(targetPort: number): Promise<TcpRelay> {
    let relay: TcpRelay | undefined;
    const server = createServer((client) => relay!.#accept(client));
    relay = new TcpRelay(server, targetPort);
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    return relay;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${(this.#server.address() as { port: number }).port}`;
  }

  /** Drops every connection and refuses new ones until {@link restore}. */
  cut(): void {
    this.#cut = true;
    for (const socket of this.#open) socket.destroy();
    this.#open.clear();
  }

  restore(targetPort = this.#targetPort): void {
    this.#targetPort = targetPort;
    this.#cut = false;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((done) => this.#server.close(() => done()));
  }

  #accept(client: Socket): void {
    if (this.#cut) {
      client.destroy();
      return;
    }
    this.connections += 1;
    const upstream = connect(this.#targetPort, "127.0.0.1");
    for (const socket of [client, upstream]) {
      this.#open.add(socket);
      socket.on("error", () => undefined);
      socket.on("close", () => {
        this.#open.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
