/**
 * A listening UNIX socket. Accepted connections are handed over as raw fds;
 * the receiver wraps them in a Channel.
 */
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { constants } from 'node:os';
import { native, PollEvent, PollMode, type PollHandle } from '../native/index.js';
import { describeValue } from '../values/describe.js';
import { checkListenOptions, type ListenOptions } from './listen-options.js';

const { EAGAIN } = constants.errno;

export type { ListenOptions } from './listen-options.js';

/** Accepts connections on a UNIX socket path. */
export class Listener {
  private readonly fd: number;
  private readonly poll: PollHandle;
  private closed = false;

  constructor(
    readonly path: string,
    onConnection: (fd: number) => void,
    options: ListenOptions = {},
  ) {
    if (typeof path !== 'string') throw new TypeError(`listen: path must be a string, got ${describeValue(path)}`);
    checkListenOptions(options);
    if (options.replaceStale !== false) removeStaleSocket(path);
    this.fd = native.listen(path, options.backlog ?? 16, options.mode ?? 0o600);
    this.poll = native.pollStart(this.fd, PollMode.Readable, (kind) => {
      if (kind !== PollEvent.Readable) return;
      for (;;) {
        const fd = native.accept(this.fd);
        if (fd < 0) return;
        onConnection(fd);
      }
    });
  }

  /** Stops accepting and removes the socket file. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    native.pollStop(this.poll);
    native.close(this.fd);
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }
}

/** Removes a socket file left by a dead process; refuses to remove anything else. */
function removeStaleSocket(path: string): void {
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket`);
  const live = native.connect(path);
  // Connected, or refused only because the backlog is full: a live server.
  if (live >= 0) native.close(live);
  else if (live !== -EAGAIN) {
    unlinkSync(path); // nobody listens: a leftover of a dead process
    return;
  }
  throw Object.assign(new Error(`${path}: another server is listening there`), { code: 'EADDRINUSE' });
}
