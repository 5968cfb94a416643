/**
 * Connecting to a UNIX socket without ever blocking the event loop.
 *
 * A non-blocking connect() to an AF_UNIX listener whose backlog is full
 * fails with EAGAIN at once (it never answers EINPROGRESS). A server that
 * listens with a backlog of 0 and has not accepted its last connection (a
 * libvfio-user server busy with its one client) stays that way for as long
 * as it likes, so {@link connectSocket} retries with a short back-off until
 * its deadline and then says what it was waiting for.
 */
import { constants } from 'node:os';
import { native } from '../native/index.js';

const { EAGAIN, ENOENT, ECONNREFUSED } = constants.errno;
const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** First and longest pause between attempts while the backlog is full. */
const FIRST_RETRY_MS = 1;
const LONGEST_RETRY_MS = 50;

/** Default for {@link ConnectOptions.timeoutMs}. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

/** A connect that failed; `code` is the errno name (`ENOENT`, `ECONNREFUSED`, `EAGAIN`, `ETIMEDOUT`). */
export class ConnectError extends Error {
  constructor(
    readonly path: string,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConnectError';
  }
}

/** Options for {@link connectSocket}. */
export interface ConnectOptions {
  /** Milliseconds to keep trying while the server's backlog is full (default 5000). */
  timeoutMs?: number;
}

/**
 * One attempt: a connected non-blocking fd, or a ConnectError (EAGAIN
 * included, when the listener's backlog is full). For callers that cannot
 * wait; {@link connectSocket} is the one that retries.
 */
export function connectNow(path: string): number {
  const fd = native.connect(path);
  if (fd >= 0) return fd;
  throw failure(path, -fd);
}

/**
 * Connects to `path`: resolves with a connected non-blocking fd. A missing
 * socket or nobody listening rejects at once; a full backlog is retried
 * (1 ms, doubling to 50 ms) until `timeoutMs`, then rejects with code
 * ETIMEDOUT and a message naming what it waited for.
 */
export async function connectSocket(path: string, options: ConnectOptions = {}): Promise<number> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  let pause = FIRST_RETRY_MS;
  for (;;) {
    const fd = native.connect(path);
    if (fd >= 0) return fd;
    if (-fd !== EAGAIN) throw failure(path, -fd);
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new ConnectError(path, 'ETIMEDOUT', `timed out after ${timeoutMs} ms waiting to connect to ${path} (backlog full / server not accepting)`);
    }
    await new Promise((r) => setTimeout(r, Math.min(pause, left)));
    pause = Math.min(pause * 2, LONGEST_RETRY_MS);
  }
}

function failure(path: string, errno: number): ConnectError {
  const code = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
  const why = WHY.get(errno);
  return new ConnectError(path, code, `cannot connect to ${path}: ${why ? `${why} (${code})` : code}`);
}

const WHY = new Map<number, string>([
  [ENOENT, 'no socket there'],
  [ECONNREFUSED, 'nobody listens there'],
  [EAGAIN, 'its backlog is full (the server is not accepting)'],
]);
