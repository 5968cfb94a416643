/**
 * Servers and CLI runs in child processes, driven through `muser` itself
 * (dist/src/cli/main.js): `muser run timer <sock>` until it listens, any
 * node script until it prints a ready marker on stderr, and one-shot CLI
 * commands with their exit code and output.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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
 * Runs `node <args>` (in `cwd`, default ours) with stderr piped and waits
 * until stderr contains `ready`. Throws (killing the child if it still runs) when it exits first
 * or does not get there within 10 s; `what` names it in the error.
 */
export async function startServer(args: string[], path: string, ready: string, what = 'server', cwd?: string): Promise<ChildServer> {
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
  while (!err.includes(ready)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited: ${err}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return server;
}

/** Runs `muser run timer <path>` (with `-v` when `verbose`) and waits until it serves. */
export function startTimer(path: string, options: { verbose?: boolean } = {}): Promise<ChildServer> {
  const args = [MAIN, 'run', 'timer', path, ...(options.verbose ? ['-v'] : [])];
  return startServer(args, path, 'serving timer', 'timer server');
}

/** Runs `muser <args>` to completion; resolves with its exit code and output. */
export function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}
