/** Waiting for things in tests, always with a deadline. */

import type { SocketEvent, SocketEventType } from "@keyward/sdk";

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns a value other than `undefined`/`false`, or fails after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

interface Listenable {
  on<K extends SocketEventType>(type: K, listener: (event: Extract<SocketEvent, { type: K }>) => void): unknown;
}

/** Records every report of a socket, in order, and waits for the ones a test expects. */
export class Recorder {
  readonly events: SocketEvent[] = [];

  constructor(socket: Listenable) {
    const types: SocketEventType[] = ["connected", "event", "lagged", "auth_failed", "token_expired", "disconnected"];
    for (const type of types) socket.on(type, (event) => this.events.push(event));
  }

  of<K extends SocketEventType>(type: K): Extract<SocketEvent, { type: K }>[] {
    return this.events.filter((event): event is Extract<SocketEvent, { type: K }> => event.type === type);
  }

  /** Waits until `count` reports of `type` arrived; returns them. */
  async waitFor<K extends SocketEventType>(type: K, count = 1, timeoutMs = 10_000): Promise<Extract<SocketEvent, { type: K }>[]> {
    return eventually(`${count} × ${type}`, () => (this.of(type).length >= count ? this.of(type) : undefined), timeoutMs);
  }
}

/**
 * Sockets a test opened, closed after it whatever its outcome: a failed assertion must not
 * leave a socket reconnecting, which would keep the test process from ever ending.
 */
export class SocketJar {
  readonly #open: Array<{ close(): void }> = [];

  track<S extends { close(): void }>(socket: S): S {
    this.#open.push(socket);
    return socket;
  }

  closeAll(): void {
    for (const socket of this.#open.splice(0)) socket.close();
  }
}
