/**
 * Servers and CLI runs in child processes, driven through `muser` itself
 * (dist/src/cli/main.js): `muser run timer <sock>` until it listens, any
 * node script until it prints a ready marker on stderr, and one-shot CLI
 * commands with their exit code and output.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The compiled `muser` CLI entry point. */
export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** A server running in a child process. */
export interface ChildServer {
  child: ChildProcess;
  /** Its socket path. */
  path: string;
  /** Everything it wrote to stderr so far. */
  readonly stderr: string;
  /** Sends SIGTERM and resolves once it exited (at once if it already has). */
  stop(): Promise<void>;
}

/**
 * Runs `node <args>` (in `cwd`, default ours) with stderr piped and waits until stderr contains
 * `ready` (or, for a function, until it returns true). Throws (killing the
 * child if it still runs) when it exits first or does not get there within
 * 10 s; `what` names it in the error.
 */
export async function startServer(args: string[], path: string, ready: string | (() => boolean), what = 'server', cwd?: string): Promise<ChildServer> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const server: ChildServer = {
    child,
    path,
    get stderr() {
      return err;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
  const deadline = Date.now() + 10_000;
  const isReady = typeof ready === 'string' ? () => err.includes(ready) : ready;
  while (!isReady()) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited: ${err}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start: ${err}`);
    }
    // Polled often: a caller waiting for the socket file connects the moment it appears.
    await new Promise((r) => setTimeout(r, typeof ready === 'string' ? 20 : 1));
  }
  return server;
}

/**
 * Runs `muser run timer <path>` (with `-v` when `verbose`) and waits until
 * it says it serves, or with `untilSocket` only until the socket file
 * exists, as libvfio-user's sample client waits for its destination server.
 */
export function startTimer(path: string, options: { verbose?: boolean; untilSocket?: boolean } = {}): Promise<ChildServer> {
  const args = [MAIN, 'run', 'timer', path, ...(options.verbose ? ['-v'] : [])];
  return startServer(args, path, options.untilSocket ? () => existsSync(path) : 'serving timer', 'timer server');
}

/**
 * Runs `muser <args>` to completion; resolves with its exit code and output.
 * With `killAfterMs`, a run that takes longer is killed (`killed` true).
 */
export function runCli(args: string[], options: { killAfterMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string; killed: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    const timer = options.killAfterMs === undefined ? undefined : setTimeout(() => ((killed = true), child.kill('SIGKILL')), options.killAfterMs);
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, killed });
    });
  });
}
