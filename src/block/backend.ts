/**
 * The storage under a block device (virtio-blk, NVMe): byte-addressed and
 * asynchronous. Requests may complete in any order; a caller that needs
 * ordering waits for completions itself (as guest drivers do).
 */

/** Why a block request failed; devices map it to their own status codes. */
export type BlockErrorCode = 'EIO' | 'EROFS' | 'ERANGE' | 'ENOTSUP' | 'ENOSPC';

/** A failed block request. */
export class BlockError extends Error {
  constructor(
    readonly code: BlockErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'BlockError';
  }
}

/** What a backend can do beyond reading and writing. */
export interface BlockCapabilities {
  /** flush() makes completed writes durable (fdatasync or equivalent). */
  readonly flush: boolean;
  /** discard() releases storage (a hole in a file). */
  readonly discard: boolean;
  /** writeZeroes() is cheaper than writing zero buffers. */
  readonly writeZeroes: boolean;
}

/**
 * A block backend. Offsets and lengths are in bytes; callers keep them
 * inside [0, size) (range errors are BlockError('ERANGE')). Buffers are
 * filled or drained in order, as one contiguous range starting at `offset`.
 * Buffers may be zero-copy views of guest memory: a backend never keeps a
 * buffer after its Promise settles.
 */
export interface BlockBackend {
  /** Capacity in bytes, a multiple of 512. */
  readonly size: number;
  /** Writes, discards and write-zeroes fail with EROFS. */
  readonly readOnly: boolean;
  readonly capabilities: BlockCapabilities;
  read(offset: number, buffers: readonly Uint8Array[]): Promise<void>;
  /** `fua`: durable before the Promise resolves. */
  write(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /** The range's contents become unspecified (zero for files and RAM) and its storage may be freed. */
  discard(offset: number, length: number): Promise<void>;
  /** The range reads as zeros afterwards; `unmap` allows freeing storage. */
  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void>;
  /** Waits for in-flight requests, then releases the backend. */
  close(): Promise<void>;
  /**
   * Optional synchronous variants, for backends that can sometimes finish
   * at once (a RAM disk; a file read the page cache holds). Each either
   * does the whole request before returning true, or returns false having
   * changed nothing on the disk (then the caller uses the asynchronous
   * method; a declined readNow may have filled part of `buffers`). They
   * check and throw as the asynchronous methods reject. They spare the
   * caller a Promise per request, and their buffers need no pin: they are
   * not used after the call returns.
   */
  readNow?(offset: number, buffers: readonly Uint8Array[]): boolean;
  /** write(), at once or not at all: see {@link BlockBackend.readNow}. */
  writeNow?(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): boolean;
  /** flush(), at once or not at all: see {@link BlockBackend.readNow}. */
  flushNow?(): boolean;
}
