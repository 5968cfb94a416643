/**
 * Runs a device server in a child process (test/helpers/serve-sample.ts)
 * and observes it from the outside: its fd and mapping counts, whether it
 * is alive, what it wrote to stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ServerLimits } from '../../src/server/session.js';
import { sleep } from './wait.js';

/** What the child reports about itself. */
export interface ServerStats {
  /** Entries in its /proc/self/fd (the listing's own dir fd included). */
  fds: number;
  /** Lines in its /proc/self/maps. */
  maps: number;
  connected: boolean;
  /** Replies nobody asked for, dropped by the current session. */
  dropped: number;
  dmaMaps: number;
  irqFds: number;
}

export interface StartOptions {
  /** `bench` (default) or `testdev` (see serve-sample.ts). */
  device?: 'bench' | 'testdev';
  limits?: Partial<ServerLimits>;
  /** Extra environment for the child. */
  env?: Record<string, string>;
  /** Polling mode (ServeOptions.poll); default: on when MUSER_TEST_POLL=1 (see integration-poll.test.ts). */
  poll?: boolean | { idleMs?: number };
  /** Server log level (default silent; stderr is captured either way). */
  log?: 'debug' | 'info' | 'warn' | 'error' | 'silent';
}

const SCRIPT = fileURLToPath(new URL('./serve-sample.js', import.meta.url));

/** A server running in a child process. */
export class ServerProcess {
  /** Everything the child wrote to stderr. */
  stderr = '';
  /** Exit code or signal once it exited. */
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly lines: string[] = [];
  private readonly lineWaiters: ((line: string | undefined) => void)[] = [];
  private readonly exitPromise: Promise<void>;

  private constructor(
    readonly child: ChildProcess,
    readonly path: string,
    private readonly dir: string,
  ) {
    this.exitPromise = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exited = { code, signal };
        for (const w of this.lineWaiters.splice(0)) w(undefined);
        resolve();
      });
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      this.stderr += d;
      if (this.stderr.length > 1 << 20) this.stderr = this.stderr.slice(-(1 << 19));
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const w = this.lineWaiters.shift();
      if (w) w(line);
      else this.lines.push(line);
    });
  }

  /** Starts a server and waits until it listens. */
  static async start(options: StartOptions = {}): Promise<ServerProcess> {
    const dir = mkdtempSync(join(tmpdir(), 'muser-test-'));
    const path = join(dir, 'dev.sock');
    const child = spawn(
      process.execPath,
      [SCRIPT, options.device ?? 'bench', path, JSON.stringify({ limits: options.limits, log: options.log ?? 'silent', poll: options.poll ?? process.env.MUSER_TEST_POLL === '1' })],
      { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_TEST_CONTEXT: undefined, ...options.env } },
    );
    const sp = new ServerProcess(child, path, dir);
    const first = await sp.nextLine(10_000);
    if (!first || !JSON.parse(first).ready) {
      sp.kill();
      throw new Error(`server did not start: ${first ?? 'exited'}; stderr: ${sp.stderr}`);
    }
    return sp;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** True while the child runs. */
  get alive(): boolean {
    return this.exited === undefined;
  }

  /** Asks the child about itself (served by its event loop, so after pending I/O). */
  async stats(): Promise<ServerStats> {
    if (!this.alive) throw new Error(`server exited ${JSON.stringify(this.exited)}; stderr:\n${this.stderr}`);
    this.child.stdin!.write('stats\n');
    const line = await this.nextLine(5000);
    if (line === undefined) throw new Error(`server exited ${JSON.stringify(this.exited)}; stderr:\n${this.stderr}`);
    return JSON.parse(line) as ServerStats;
  }

  /** Counts /proc/<pid>/fd from outside. */
  fdCount(): number {
    return readdirSync(`/proc/${this.pid}/fd`).length;
  }

  /** Counts /proc/<pid>/maps lines from outside. */
  mapCount(): number {
    return readFileSync(`/proc/${this.pid}/maps`, 'utf8').split('\n').length;
  }

  /**
   * Counts mappings of memfds (lines with `/memfd:` plus `name`) from
   * outside: the server's own region memory and any client memory it has
   * mapped for DMA. Unlike the total line count this does not move with
   * the JS heap.
   */
  memfdMappings(name = ''): number {
    return readFileSync(`/proc/${this.pid}/maps`, 'utf8')
      .split('\n')
      .filter((l) => l.includes(`/memfd:${name}`)).length;
  }

  /**
   * Polls stats until `pred` holds; returns the last stats. Throws with
   * the last stats when it does not hold within `timeoutMs`.
   */
  async waitFor(pred: (s: ServerStats) => boolean, what: string, timeoutMs = 5000): Promise<ServerStats> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.stats();
      if (pred(s)) return s;
      if (Date.now() > deadline) throw new Error(`server never reached: ${what}; last stats ${JSON.stringify(s)}`);
      await sleep(10);
    }
  }

  /** Waits until no client is connected. */
  idle(timeoutMs = 5000): Promise<ServerStats> {
    return this.waitFor((s) => !s.connected, 'no client connected', timeoutMs);
  }

  /** Asks the child to exit and waits; kills it after a timeout. */
  async stop(): Promise<void> {
    if (this.alive) {
      this.child.stdin!.write('exit\n');
      const t = setTimeout(() => this.kill(), 3000);
      await this.exitPromise;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Resolves when the child exits. */
  whenExited(): Promise<void> {
    return this.exitPromise;
  }

  private kill(): void {
    if (this.alive) this.child.kill('SIGKILL');
  }

  private nextLine(timeoutMs: number): Promise<string | undefined> {
    const queued = this.lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (!this.alive) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`server did not answer in ${timeoutMs} ms; stderr:\n${this.stderr}`)), timeoutMs);
      this.lineWaiters.push((line) => {
        clearTimeout(t);
        resolve(line);
      });
    });
  }
}

