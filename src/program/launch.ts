/**
 * Starting a device program: which command runs a file (its `#!` line,
 * `python3` for a `.py` without one, or `--python`), and the child process
 * with its end of a socket pair as fd 3.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, openSync, readSync, closeSync, existsSync } from 'node:fs';
import { delimiter, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../native/index.js';

/** The fd a program finds its socket on (and MUSER_DEVICE_FD says so). */
export const PROGRAM_FD = 3;

/** Where muser's own Python package lives (put first on the program's PYTHONPATH). */
export const PYTHON_PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../python');

/** A device program that cannot be started. */
export class ProgramStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProgramStartError';
  }
}

/**
 * The command line that runs `file`: `[interpreter..., file]`. A `.py`
 * file runs under `python` when given, else under its `#!` line, else
 * `python3`. Anything else runs as it is (it must be executable).
 */
export function programCommand(file: string, python?: string): string[] {
  if (!existsSync(file)) throw new ProgramStartError(`${file}: no such file`);
  const isPython = file.endsWith('.py');
  if (isPython && python !== undefined) return [python, file];
  const shebang = readShebang(file);
  if (shebang) return [...shebang, file];
  if (isPython) return ['python3', file];
  try {
    accessSync(file, constants.X_OK);
  } catch {
    throw new ProgramStartError(`${file}: not executable and not a .py file: make it executable, or give it a #! line`);
  }
  return [file];
}

/** The words of a `#!` line, or undefined when the file has none. */
function readShebang(file: string): string[] | undefined {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(256);
    const n = readSync(fd, head, 0, head.length, 0);
    const text = head.subarray(0, n).toString('utf8');
    if (!text.startsWith('#!')) return undefined;
    const line = text.slice(2).split('\n')[0].trim();
    return line === '' ? undefined : line.split(/\s+/);
  } finally {
    closeSync(fd);
  }
}

/** A started program: the process, and muser's end of the socket. */
export interface LaunchedProgram {
  child: ChildProcess;
  fd: number;
}

/**
 * Starts `command` (with `args` after it) with its end of a new socket
 * pair on fd 3. `spawn` errors (no such interpreter) arrive as the
 * child's 'error' event; the caller watches for it.
 */
export function launchProgram(command: readonly string[], args: readonly string[], env: Record<string, string>): LaunchedProgram {
  const [ours, theirs] = native.socketpair();
  // Ours stays non-blocking (the event loop polls it); the program gets ordinary blocking I/O.
  native.setBlocking(theirs, true);
  let child: ChildProcess;
  try {
    child = spawn(command[0], [...command.slice(1), ...args], {
      stdio: ['inherit', 'inherit', 'inherit', theirs],
      env: {
        ...process.env,
        ...env,
        MUSER_DEVICE_FD: String(PROGRAM_FD),
        PYTHONPATH: [PYTHON_PACKAGE_DIR, process.env.PYTHONPATH].filter((p) => p).join(delimiter),
      },
    });
  } catch (e) {
    native.close(ours);
    throw new ProgramStartError(`cannot start ${command.join(' ')}: ${(e as Error).message}`);
  } finally {
    native.close(theirs);
  }
  return { child, fd: ours };
}
