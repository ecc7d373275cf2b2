/**
 * Starts the real `keyward` binary for tests, scripts and benchmarks: port 0, a fresh data
 * directory, the first root keys read from its output, and nothing of the host's own
 * Keyward settings leaking in.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const repositoryRoot = resolve(packageRoot, "../..");

/**
 * `KEYWARD_BIN` when it is set (and then only it: a mistyped path must not quietly test
 * another build), else the repository's release build, else its debug build; `undefined`
 * when there is none (the suites then say why they skip).
 */
export function keywardBinary(): string | undefined {
  const named = process.env.KEYWARD_BIN;
  if (named) return existsSync(named) ? named : undefined;
  return [join(repositoryRoot, "target/release/keyward"), join(repositoryRoot, "target/debug/keyward")].find((path) =>
    existsSync(path),
  );
}

/** Why the suites cannot run, or `undefined` when they can; for `describe(…, { skip })`. */
export function skipReason(): string | undefined {
  if (keywardBinary()) return undefined;
  const named = process.env.KEYWARD_BIN;
  return named
    ? `KEYWARD_BIN=${named} does not exist`
    : "no keyward binary: set KEYWARD_BIN or build the server (cargo build --release -p keyward)";
}

export interface StartOptions {
  /** Extra settings, e.g. `{ CORS_ORIGIN: "http://127.0.0.1:1234" }`. */
  env?: Record<string, string>;
  /** Reuse a data directory (a restart); a fresh one otherwise. */
  dataDir?: string;
  /** `127.0.0.1:0` unless given (a restart listens where it listened before). */
  listen?: string;
}

export class KeywardServer {
  readonly baseUrl: string;
  /** The `sk_live_…` and `sk_test_…` printed on first start; empty on a restart. */
  readonly liveKey: string;
  readonly testKey: string;
  readonly dataDir: string;
  readonly #child: ChildProcess;
  readonly #ownsDataDir: boolean;
  readonly #options: StartOptions;
  #exited: Promise<void>;

  private constructor(
    child: ChildProcess,
    found: { baseUrl: string; liveKey: string; testKey: string },
    dataDir: string,
    ownsDataDir: boolean,
    options: StartOptions,
  ) {
    this.#child = child;
    this.baseUrl = found.baseUrl;
    this.liveKey = found.liveKey;
    this.testKey = found.testKey;
    this.dataDir = dataDir;
    this.#ownsDataDir = ownsDataDir;
    this.#options = options;
    this.#exited = new Promise((done) => {
      if (child.exitCode !== null || child.signalCode !== null) done();
      else child.once("exit", () => done());
    });
  }

  static async start(options: StartOptions = {}): Promise<KeywardServer> {
    const binary = keywardBinary();
    if (!binary) throw new Error(skipReason());
    const ownsDataDir = options.dataDir === undefined;
    const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "keyward-ts-sdk-"));
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries(process.env)) {
      // The server refuses unknown KEYWARD_ settings (KEYWARD_BIN among them), and the host's
      // own must not change the server under test.
      const hostSetting =
        name.startsWith("KEYWARD_") || ["DATABASE_URL", "CORS_ORIGIN", "REDIS_URL"].includes(name);
      if (!hostSetting && value !== undefined) env[name] = value;
    }
    const child = spawn(
      binary,
      ["serve", "--listen", options.listen ?? "127.0.0.1:0", "--data-dir", dataDir],
      { env: { ...env, KEYWARD_LOG: "warn", ...options.env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-4000);
    });
    const found = await new Promise<{ baseUrl: string; liveKey: string; testKey: string }>((done, fail) => {
      const lines = createInterface({ input: child.stdout! });
      let liveKey = "";
      let testKey = "";
      const timer = setTimeout(() => fail(new Error(`keyward did not start in 30 s: ${stderr}`)), 30_000);
      lines.on("line", (raw) => {
        const line = raw.trim();
        if (line.startsWith("live: ")) liveKey = line.slice("live: ".length);
        else if (line.startsWith("test: ")) testKey = line.slice("test: ".length);
        else if (line.startsWith("Keyward listening on ")) {
          clearTimeout(timer);
          done({ baseUrl: line.slice("Keyward listening on ".length), liveKey, testKey });
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`keyward exited (${code}) before listening: ${stderr}`));
      });
    });
    // Keep draining stdout so the server never blocks on a full pipe.
    child.stdout?.resume();
    return new KeywardServer(child, found, dataDir, ownsDataDir, options);
  }

  get port(): number {
    return Number(new URL(this.baseUrl).port);
  }

  /** Stops the process (SIGTERM, then SIGKILL after 5 s); keeps the data directory. */
  async halt(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.kill("SIGTERM");
    const killer = setTimeout(() => this.#child.kill("SIGKILL"), 5_000);
    await this.#exited;
    clearTimeout(killer);
  }

  /** Stops the server and removes the data directory it made. */
  async stop(): Promise<void> {
    await this.halt();
    if (this.#ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** The same data on the same address: a restart, as after a deploy. */
  async restart(): Promise<KeywardServer> {
    await this.halt();
    return KeywardServer.start({ ...this.#options, dataDir: this.dataDir, listen: `127.0.0.1:${this.port}` });
  }

  /** One Prometheus metric's value, or `undefined` if the server does not report it. */
  async metric(name: string): Promise<number | undefined> {
    const text = await (await fetch(`${this.baseUrl}/metrics`)).text();
    for (const line of text.split("\n")) {
      if (line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
    }
    return undefined;
  }

  /** The OpenAPI document the server serves. */
  async openapi(): Promise<Record<string, unknown>> {
    return (await (await fetch(`${this.baseUrl}/openapi.json`)).json()) as Record<string, unknown>;
  }
}
