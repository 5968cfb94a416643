/**
 * Test side of serve-many.ts: a child process serving several devices,
 * observed from outside (socket paths, RSS, whether it is still alive).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ServerLimits } from '../../src/server/session.js';

const SCRIPT = fileURLToPath(new URL('./serve-many.js', import.meta.url));

export type DeviceKind = 'memory' | 'dma' | 'throwing';

/** Several devices served by one child process. */
export class ManyProcess {
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  stderr = '';
  private readonly lines: string[] = [];
  private readonly waiters: ((l: string | undefined) => void)[] = [];

  private constructor(
    readonly child: ChildProcess,
    private readonly dir: string,
    readonly kinds: readonly DeviceKind[],
  ) {
    child.on('exit', (code, signal) => {
      this.exited = { code, signal };
      for (const w of this.waiters.splice(0)) w(undefined);
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const w = this.waiters.shift();
      if (w) w(l);
      else this.lines.push(l);
    });
  }

  /** Starts the child and waits until every device listens. */
  static async start(kinds: DeviceKind[], limits: Partial<ServerLimits> = {}): Promise<ManyProcess> {
    const dir = mkdtempSync(join(tmpdir(), 'muser-many-'));
    const child = spawn(process.execPath, ['--expose-gc', SCRIPT, dir, ...kinds, `--limits=${JSON.stringify(limits)}`], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const p = new ManyProcess(child, dir, kinds);
    const first = await p.line();
    if (!first || !JSON.parse(first).ready) throw new Error(`serve-many did not start: ${p.stderr}`);
    return p;
  }

  /** Socket path of device `i`. */
  path(i: number): string {
    return join(this.dir, `${i}.sock`);
  }

  get alive(): boolean {
    return this.exited === undefined;
  }

  /** The child's resident set size in bytes (after a GC). */
  async rss(): Promise<number> {
    this.child.stdin!.write('rss\n');
    const l = await this.line();
    if (!l) throw new Error(`serve-many exited: ${JSON.stringify(this.exited)} ${this.stderr}`);
    return (JSON.parse(l) as { rss: number }).rss;
  }

  async stop(): Promise<void> {
    if (this.alive) {
      const gone = new Promise((r) => this.child.once('exit', r));
      this.child.stdin!.end('exit\n');
      await gone;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  private line(): Promise<string | undefined> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.exited) return Promise.resolve(undefined);
    return new Promise((r) => this.waiters.push(r));
  }
}
