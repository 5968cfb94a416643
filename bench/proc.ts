/**
 * Bench plumbing: paths, building the C programs, running them, the muser
 * server processes, the machine description and small statistics.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout root (this file runs from dist/bench/). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = join(ROOT, 'bench', 'bin');
export const PINGPONG = join(BIN, 'pingpong');
export const LOADGEN = join(BIN, 'loadgen');
export const BLKDRV = join(BIN, 'blkdrv');
export const NVMEDRV = join(BIN, 'nvmedrv');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
export const DEVICES_HOST = join(ROOT, 'dist', 'bench', 'devices-host.js');

/** Something the bench could not do: ends the run with exit status 1. */
export class BenchError extends Error {}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Builds bench/bin/{pingpong,loadgen} with `make -C bench/c` (a no-op when up to date). */
export function buildC(): void {
  const cc = process.env.CC ?? 'gcc';
  if (!have('make')) throw new BenchError('`make` not found: install make (e.g. `apt-get install make`) to build bench/c');
  if (!have(cc)) throw new BenchError(`C compiler \`${cc}\` not found: install gcc (e.g. \`apt-get install gcc\`) to build bench/c`);
  const r = spawnSync('make', ['-s', '-C', join(ROOT, 'bench', 'c')], { encoding: 'utf8' });
  if (r.status !== 0) throw new BenchError(`make -C bench/c failed:\n${r.stdout}${r.stderr}`);
  for (const p of [PINGPONG, LOADGEN, BLKDRV, NVMEDRV]) if (!existsSync(p)) throw new BenchError(`${p} missing after make -C bench/c`);
  if (!have('taskset')) throw new BenchError('`taskset` not found (util-linux): the bench pins the server to CPU 0');
  if (!existsSync(CLI) || !existsSync(DEVICES_HOST)) throw new BenchError('dist/ is not built: run `npx tsc -p .` first');
}

/** Output of a C bench program: its one JSON line. */
export type Json = Record<string, number | string | boolean>;

/** Runs a program that prints one JSON line; rejects with its stderr on failure. */
export function runJson(cmd: string, args: string[], timeoutMs = 60_000): Promise<Json> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new BenchError(`${cmd}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const what = `${cmd.replace(ROOT + '/', '')} ${args.join(' ')}`;
      if (code !== 0) return reject(new BenchError(`${what}: ${signal ? `killed by ${signal}` : `exit ${code}`}\n${err.trim()}`));
      const line = out.trim().split('\n').pop() ?? '';
      try {
        resolvePromise(JSON.parse(line) as Json);
      } catch {
        reject(new BenchError(`${what}: no JSON on stdout: ${JSON.stringify(out)}`));
      }
    });
  });
}

/** pingpong with the given flags, pinned to CPU 0 (both ends). */
export function pingpong(args: string[]): Promise<Json> {
  return runJson(PINGPONG, [...args, '--cpu', '0']);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The muser bench sample served by the CLI (`muser run bench SOCK`), pinned
 * to CPU 0. It serves one client at a time, so {@link loadgen} waits for the
 * previous client's disconnect (the CLI logs it at level info) before the
 * next one connects.
 */
/** Servers still running: whatever ends the bench (a part that throws before its own cleanup) ends them too. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export class CliServer {
  private readonly child: ChildProcess;
  private stderr = '';
  private connects = 0;
  private disconnects = 0;
  private exited = false;

  private constructor(
    readonly socket: string,
    cpu: number | string,
    runArgs: string[],
    sample: string,
    runOptions: string[],
  ) {
    this.child = spawn('taskset', ['-c', String(cpu), process.execPath, CLI, 'run', ...runOptions, sample, socket, ...runArgs], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.connects += count(d, 'client connected');
      this.disconnects += count(d, 'client disconnected');
      this.stderr = (this.stderr + d).slice(-4000);
    });
    running.add(this.child);
    this.child.on('exit', () => {
      this.exited = true;
      running.delete(this.child);
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /**
   * Serves `sample` (default bench) on `socket`, pinned to `cpu` (default 0), with extra `muser run` device
   * options (e.g. `--poll`) and options of `muser run` itself before the sample (e.g. `--isolate`).
   */
  static async start(socket: string, cpu: number | string = 0, runArgs: string[] = [], sample = 'bench', runOptions: string[] = []): Promise<CliServer> {
    const s = new CliServer(socket, cpu, runArgs, sample, runOptions);
    await s.until(() => s.stderr.includes('serving'), 10_000, 'the server did not start');
    return s;
  }

  private async until(cond: () => boolean, ms: number, what: string): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (this.exited) throw new BenchError(`muser server exited:\n${this.stderr}`);
      if (Date.now() > end) throw new BenchError(`${what}:\n${this.stderr}`);
      await sleep(2);
    }
  }

  /** Runs `loadgen SOCK op args --cpu 0` against this server. */
  loadgen(op: string, args: string[]): Promise<Json> {
    return this.client(LOADGEN, [this.socket, op, ...args, '--cpu', '0']);
  }

  /** Runs a client program (one JSON line out) once the previous client has gone. */
  async client(cmd: string, args: string[]): Promise<Json> {
    for (let attempt = 1; ; attempt++) {
      await this.until(() => this.disconnects >= this.connects, 5_000, 'the previous client never disconnected');
      try {
        return await runJson(cmd, args);
      } catch (e) {
        // A client that connects before the server noticed the last one
        // leave is refused: the connection closes during VERSION.
        if (attempt >= 3 || this.exited || !String(e).includes('VERSION')) throw this.withServerLog(e);
        await sleep(50);
      }
    }
  }

  /**
   * Runs a client program like {@link client}, and measures the server's
   * CPU meanwhile: utime + stime over the client's wall time (1.0 = one
   * CPU busy throughout; the tick is 10 ms, so a 2 s run resolves 0.5%).
   */
  async clientWithCpu(cmd: string, args: string[]): Promise<{ json: Json; cpu: number }> {
    await this.until(() => this.disconnects >= this.connects, 5_000, 'the previous client never disconnected');
    const c0 = cpuSeconds(this.pid);
    const t0 = performance.now();
    const json = await this.client(cmd, args);
    const wall = (performance.now() - t0) / 1000;
    return { json, cpu: (cpuSeconds(this.pid) - c0) / wall };
  }

  /** A client's failure, with what the server logged last (a stall is the server's as often as the client's). */
  private withServerLog(e: unknown): Error {
    const tail = this.stderr.trim().split('\n').slice(-15).join('\n');
    return new BenchError(`${e instanceof Error ? e.message : String(e)}\nthe server (pid ${this.pid}) logged last:\n${tail}`);
  }

  /** Stops the server (SIGTERM, then SIGKILL after 3 s). */
  async stop(): Promise<void> {
    if (this.exited) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await new Promise((r) => this.child.once('exit', r));
    clearTimeout(t);
  }
}

function count(s: string, what: string): number {
  return s.split(what).length - 1;
}

/** utime + stime of a process, in seconds (/proc/<pid>/stat). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at ')'.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]); // fields 14 and 15, utime and stime
  return ticks / 100; // USER_HZ is 100 on Linux
}

/** The 1-minute load average, to print beside figures measured on a shared machine. */
export function loadAverage(): number {
  return os.loadavg()[0];
}

/** VmRSS of a process in KiB. */
export function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new BenchError(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** What ran the bench. */
export interface Machine {
  cpu: string;
  nproc: number;
  memTotalMiB: number;
  kernel: string;
  node: string;
  commit: string;
  dirty: boolean;
}

export function machine(): Machine {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  const git = (args: string[]): string => spawnSync('git', ['-C', ROOT, ...args], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const nproc = Number(spawnSync('nproc', { encoding: 'utf8' }).stdout?.trim()) || os.availableParallelism();
  return {
    cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown',
    nproc,
    memTotalMiB: Math.round(Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0) / 1024),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    commit: git(['rev-parse', '--short=12', 'HEAD']) || 'unknown',
    dirty: git(['status', '--porcelain', '--untracked-files=no']) !== '',
  };
}

/** Field by field, the median of several rounds' figures. */
export function medianFields<T extends { [K in keyof T]: number }>(rounds: readonly T[]): T {
  const keys = Object.keys(rounds[0] ?? {}) as (keyof T)[];
  return Object.fromEntries(keys.map((k) => [k, median(rounds.map((r) => r[k]))])) as T;
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function num(j: Json, key: string): number {
  const v = j[key];
  if (typeof v !== 'number') throw new BenchError(`missing number '${key}' in ${JSON.stringify(j)}`);
  return v;
}
