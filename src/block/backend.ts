/**
 * The storage under a block device (virtio-blk, NVMe): byte-addressed,
 * synchronous where it can be and asynchronous where it must. Requests may
 * complete in any order; a caller that needs ordering waits for
 * completions itself (as guest drivers do).
 */

/** @internal A value now, or a Promise of it later (the block layer imports nothing above it, so it names its own). */
export type MaybePromise<T> = T | Promise<T>;

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
 *
 * Each request either finishes at once (the method returns, or throws its
 * BlockError) or returns a Promise (that rejects with its BlockError): a
 * RAM disk never waits, a file read the page cache holds need not, a
 * network disk always does. Callers handle both (`await` does), and a
 * request that finished at once costs no Promise.
 *
 * Buffers may be zero-copy views of guest memory: a backend never keeps a
 * buffer after the call returns (when it finished at once) or after its
 * Promise settles. A caller that lends unpinned views may pin them right
 * after a call returned a Promise: nothing runs in between.
 */
export interface BlockBackend {
  /** Capacity in bytes, a multiple of 512. */
  readonly size: number;
  /** Writes, discards and write-zeroes fail with EROFS. */
  readonly readOnly: boolean;
  readonly capabilities: BlockCapabilities;
  read(offset: number, buffers: readonly Uint8Array[]): void | Promise<void>;
  /** `fua`: durable before the request completes. */
  write(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): void | Promise<void>;
  /** Makes every completed write durable. */
  flush(): void | Promise<void>;
  /** The range's contents become unspecified (zero for files and RAM) and its storage may be freed. */
  discard(offset: number, length: number): void | Promise<void>;
  /** The range reads as zeros afterwards; `unmap` allows freeing storage. */
  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): void | Promise<void>;
  /** Waits for in-flight requests, then releases the backend. */
  close(): Promise<void>;
}
