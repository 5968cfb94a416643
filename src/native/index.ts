/**
 * Typed access to the native addon (native/muser.c). Only kernel primitives
 * live there; everything with policy lives in TypeScript.
 */
import { createRequire } from 'node:module';

/** Kinds of poller events, as numbered by the addon. */
export const enum PollEvent {
  Data = 0,
  Eof = 1,
  Error = 2,
  Writable = 3,
  Count = 4,
  Readable = 5,
}

/** How a poller reads its fd. */
export const enum PollMode {
  /** recvmsg into Buffers, with SCM_RIGHTS fds. */
  Stream = 0,
  /** read the 8-byte eventfd counter. */
  EventFd = 1,
  /** only report readability. */
  Readable = 2,
  /**
   * As Stream, but reads with MSG_PEEK: the bytes stay in the socket until
   * the callback consumes them ({@link NativeAddon.recvDiscard}), and fds
   * come as fresh copies. With SO_PEEK_OFF set ({@link NativeAddon.setPeekOffset})
   * each peek returns the bytes after the previous one.
   */
  StreamPeek = 3,
}

/** Opaque poller handle (type-tagged: given where another kind belongs, it throws). */
export type PollHandle = { readonly __poll: unique symbol };
/** Opaque mapping handle (type-tagged, as a PollHandle). */
export type MapHandle = { readonly __map: unique symbol };
/** Opaque watch handle (type-tagged, as a PollHandle). */
export type WatchHandle = { readonly __watch: unique symbol };

/**
 * A poller's events: Data(buffer or length, fds?), Eof, Error(errno,
 * reason?), Writable, Count(n), Readable. Error with EPROTO and a reason:
 * the kernel dropped fds sent with a message (MSG_CTRUNC); the fds that did
 * arrive were closed and the message's bytes are gone, so the stream is
 * broken.
 */
export type PollCallback = (kind: PollEvent, a: unknown, b: unknown) => void;

/**
 * The addon's functions. Expected failures of a system call come back as
 * -errno (or throw where noted); misuse always throws: an argument of the
 * wrong type throws a TypeError and a number that is not an integer or does
 * not fit its C type a RangeError, each naming the function and argument
 * (`listen: mode must be an integer in 0..0o777, got string`); a handle of
 * the wrong kind throws a TypeError.
 */
export interface NativeAddon {
  /** A listening socket at `path` with file mode `mode` (0..0o777, set before listen()); throws on failure. */
  listen(path: string, backlog: number, mode: number): number;
  accept(fd: number): number;
  /** A connected non-blocking fd, or -errno (-EAGAIN while the listener's backlog is full); never blocks. */
  connect(path: string): number;
  socketpair(): [number, number];
  sendmsg(fd: number, data: Buffer | Buffer[], fds?: readonly number[]): number;
  /**
   * Watches `fd` (one poller per fd: a second one throws EEXIST). With
   * `recvBuffer`, Stream data lands there and events carry its length.
   */
  pollStart(fd: number, mode: PollMode, cb: PollCallback, recvBuffer?: Buffer): PollHandle;
  pollWritable(h: PollHandle, on: boolean): void;
  pollPause(h: PollHandle, paused: boolean): void;
  /** Later Stream reads land in `buffer` (only for pollers started with a recvBuffer). */
  pollSetBuffer(h: PollHandle, buffer: Buffer): void;
  pollStop(h: PollHandle): void;
  /**
   * Consumes `length` bytes from the socket, dropping them and closing any
   * fds they carry: what a StreamPeek poller handed over. Bytes consumed
   * (fewer if the socket ran dry or reached EOF first), or -errno when
   * none were.
   */
  recvDiscard(fd: number, length: number): number;
  /** The socket's SO_PEEK_OFF: >= 0, -1 while off (the default), or -errno (never -1). */
  peekOffset(fd: number): number;
  /** Sets SO_PEEK_OFF (-1 turns it off): 0 or -errno. */
  setPeekOffset(fd: number, offset: number): number;
  /**
   * Busy polling: with `idleNs` > 0, activity on this poller keeps the event
   * loop polling without sleeping until `idleNs` pass without any; 0 turns
   * it off. Arms the window at once. While spinning, the loop reads a
   * stream poller (or a non-blocking eventfd's) fd itself (see spinState).
   */
  pollSpin(h: PollHandle, idleNs: number): void;
  /**
   * [1 while the loop busy-polls else 0, times it started busy-polling,
   * events the busy-polling loop read from its spinning pollers' fds
   * itself rather than through epoll]. While it busy-polls, a thread with
   * at most four spinning pollers (stream sockets, and eventfds opened
   * O_NONBLOCK) reads them directly, for up to 10 us per turn of the loop.
   */
  spinState(): [number, number, number];
  /**
   * Watches `length` bytes at `offset` of a shared mapping (`buffer`, the
   * ArrayBuffer mmap returned with `map`) as words of `width` bytes, for
   * writes by another process: scanned on every turn of a busy-polling
   * loop and every `intervalMs` otherwise; a change calls `callback` with
   * the word's offset in the watch and its value, and keeps the loop
   * busy-polling for `idleNs` (0: never). `rearm` undefined: a change of
   * value is a write (what the words hold now counts as seen); a number:
   * each word is set to it now and swapped back to it after every write,
   * so repeated values are seen too. While watched, munmap returns -EBUSY.
   * `keep`: a rearming watch leaves the words as they are, and each one
   * holding anything but `rearm` is reported by the first scan (a write
   * no process saw: a successor taking over memory a client maps).
   */
  watchStart(map: MapHandle, buffer: ArrayBuffer, offset: number, length: number, width: 1 | 2 | 4, rearm: number | undefined, intervalMs: number, idleNs: number, callback: (offset: number, value: number) => void, keep?: boolean): WatchHandle;
  /** Stops a watch for good (idempotent). */
  watchStop(h: WatchHandle): void;
  /** A paused watch is not scanned; what was written meanwhile is seen when it resumes. */
  watchPause(h: WatchHandle, paused: boolean): void;
  /** Writes a word (offset in the watch) of a by-value watch and counts the value as seen: 0, or -EINVAL (stopped, or a rearming watch). */
  watchStore(h: WatchHandle, offset: number, value: number): number;
  /** Scans this thread's watches now; the number of words that changed. */
  watchScan(): number;
  /** A full memory barrier: no later load passes an earlier store. */
  memoryFence(): void;
  /** `group` (non-zero): {@link mmapRevokeGroup} can revoke the mapping from any thread. */
  mmap(fd: number, offset: number, length: number, shared: boolean, group?: number): [ArrayBuffer, MapHandle] | number;
  munmap(h: MapHandle, ab: ArrayBuffer): number;
  /**
   * Moves a shared mapping's pages to a new address (returned) and puts
   * private scratch memory at the old one, with no hole between: writes
   * through views taken so far stop reaching the shared memory. The old
   * handle and ArrayBuffer now hold the scratch (munmap them when done).
   * -errno (-EINVAL for private mappings).
   */
  mmapRevoke(h: MapHandle): [ArrayBuffer, MapHandle] | number;
  /**
   * Maps `fd` (shared, from offset 0) over a mapping's addresses in one
   * step: every view of it reads and writes fd's bytes from now on. 0, or
   * -errno (-EINVAL: unmapped or revoked, or fd shorter than the mapping).
   */
  mmapReplace(h: MapHandle, fd: number): number;
  /**
   * Puts private scratch memory over every live mapping made with `group`
   * (by any thread): for a thread being ended, whose I/O must never write
   * the shared memory again. Mappings revoked, or -errno.
   */
  mmapRevokeGroup(group: number): number;
  eventfd(initval: number): number;
  eventfdWrite(fd: number, value: number): number;
  eventfdRead(fd: number): number;
  /** A memfd of `size` bytes; `allowSealing` creates it with MFD_ALLOW_SEALING. */
  memfd(name: string, size: number, allowSealing?: boolean): number;
  ftruncate(fd: number, size: number): number;
  close(fd: number): number;
  dup(fd: number): number;
  /** Clears (or sets) O_NONBLOCK; 0 or -errno. */
  setBlocking(fd: number, blocking: boolean): number;
  fdSize(fd: number): number;
  /** F_GET_SEALS bits, or -errno (-EINVAL for files without seals). */
  fdSeals(fd: number): number;
  /** F_ADD_SEALS; 0 or -errno. */
  addSeals(fd: number, seals: number): number;
  /** pread into `bytes` at file `offset`: bytes read (short at end of file) or -errno. */
  pread(fd: number, bytes: Uint8Array, offset: number): number;
  /**
   * preadv2(RWF_NOWAIT) into `buffers` at file `offset`: only what the page
   * cache holds, never blocking on the disk. Bytes read (short or -EAGAIN
   * when some or all of it is not cached) or -errno (-EOPNOTSUPP where the
   * file system does not support it).
   */
  preadvNowait(fd: number, buffers: readonly Uint8Array[], offset: number): number;
  /** pwrite `bytes` at file `offset`: bytes written or -errno. */
  pwrite(fd: number, bytes: Uint8Array, offset: number): number;
  /** fallocate(2) on the thread pool; resolves to 0 or -errno. */
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<number>;
  /** A block device's size in bytes (BLKGETSIZE64), or -errno. */
  blockDeviceSize(fd: number): number;
}

/** fallocate(2) mode bits (linux/falloc.h). */
export const enum FallocMode {
  KeepSize = 0x01,
  PunchHole = 0x02,
  ZeroRange = 0x10,
}

/** File seal bits (fcntl F_ADD_SEALS / F_GET_SEALS). */
export const FileSeal = {
  SEAL: 0x0001,
  SHRINK: 0x0002,
  GROW: 0x0004,
  WRITE: 0x0008,
} as const;

const require = createRequire(import.meta.url);

function load(): NativeAddon {
  const candidates = ['../../../build/Release/muser.node', '../../../build/Debug/muser.node'];
  let last: unknown;
  for (const c of candidates) {
    try {
      return require(c) as NativeAddon;
    } catch (e) {
      last = e;
    }
  }
  throw new Error(`muser native addon not built (run npm install): ${String(last)}`);
}

/**
 * The loaded addon. A copy of its exports: V8 keeps the addon's own exports
 * object in dictionary mode, where each `native.fn` load on the hot path
 * (sendmsg per reply) is a call into the load IC instead of a field read.
 */
export const native: NativeAddon = { ...load() };

/** An Error carrying a positive errno, thrown when a native call returned -errno. */
export class SystemError extends Error {
  constructor(
    readonly op: string,
    readonly errno: number,
  ) {
    super(`${op} failed: errno ${errno}`);
    this.name = 'SystemError';
  }
}

/** Throws SystemError for a negative return; returns the value otherwise. */
export function check(op: string, rc: number): number {
  if (rc < 0) throw new SystemError(op, -rc);
  return rc;
}
