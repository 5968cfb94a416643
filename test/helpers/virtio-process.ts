/** Runs test/helpers/virtio-serve.ts in a child process and talks to it. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('./virtio-serve.js', import.meta.url));

/** A virtio device served by a child process. */
export class VirtioProcess {
  stderr = '';
  private lines: string[] = [];
  private waiters: ((l: string | undefined) => void)[] = [];
  private exited = false;
  private readonly exit: Promise<void>;

  private constructor(
    readonly child: ChildProcess,
    readonly path: string,
    private readonly dir: string,
  ) {
    this.exit = new Promise((resolve) =>
      child.on('exit', () => {
        this.exited = true;
        for (const w of this.waiters.splice(0)) w(undefined);
        resolve();
      }),
    );
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => (this.stderr += d));
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const w = this.waiters.shift();
      if (w) w(l);
      else this.lines.push(l);
    });
  }

  static async start(kind: 'blk' | 'rng' | 'nvme', options: Record<string, unknown> = {}): Promise<VirtioProcess> {
    const dir = mkdtempSync(join(tmpdir(), 'muser-vproc-'));
    const path = join(dir, 'dev.sock');
    const child = spawn(process.execPath, [SCRIPT, kind, path, JSON.stringify(options)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NODE_TEST_CONTEXT: undefined },
    });
    const p = new VirtioProcess(child, path, dir);
    const first = await p.line();
    if (!first || !JSON.parse(first).ready) throw new Error(`virtio server did not start: ${p.stderr}`);
    return p;
  }

  get alive(): boolean {
    return !this.exited;
  }

  async stats(): Promise<{ fds: number; connected: boolean }> {
    this.child.stdin!.write('stats\n');
    const l = await this.line();
    if (!l) throw new Error(`server exited; stderr: ${this.stderr}`);
    return JSON.parse(l) as { fds: number; connected: boolean };
  }

  /** Waits until no client is connected. */
  async waitIdle(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((await this.stats()).connected) {
      if (Date.now() > deadline) throw new Error('a client is still connected');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async stop(): Promise<void> {
    if (!this.exited) {
      this.child.stdin!.write('exit\n');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
      await this.exit;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  private line(timeoutMs = 10_000): Promise<string | undefined> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.exited) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no answer; stderr: ${this.stderr}`)), timeoutMs);
      this.waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  }
}
