/**
 * A raw image file (or a block device) as a block backend. Every request
 * runs on the libuv thread pool, so the event loop never waits on the disk,
 * and requests complete in whatever order they finish.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:os';
import { FallocMode, native } from '../native/index.js';
import { BlockError, type BlockCapabilities, type BlockErrorCode, type MaybePromise } from './backend.js';
import { byteLength, checkCapacity, checkRange, checkWritable, SECTOR_SIZE } from './checks.js';
import { InFlight } from './inflight.js';
import { sliceScatter } from './scatter.js';
import type { ShareableBackend, SharedBackend } from './shared.js';

/** Options of {@link openFileBackend}. */
export interface FileBackendOptions {
  /** Open the file read-only; writes, discards and write-zeroes fail with EROFS. */
  readonly readOnly?: boolean;
}

/** A file backend; worker threads open the same file by path (see {@link ShareableBackend}). */
export interface FileBackend extends ShareableBackend {
  /** The path it was opened from. */
  readonly path: string;
}

/** Zeros written when the filesystem cannot punch or zero a range. */
const ZERO_CHUNK = 1 << 20;
const { EINTR, EOPNOTSUPP, ENOSYS, EINVAL, ENOSPC, EDQUOT, EROFS } = constants.errno;

/**
 * Opens a raw image file or block device. The capacity is the file's size
 * rounded down to a multiple of 512 bytes; it must not be zero.
 *
 * - flush is fdatasync (durable); a write with `fua` is followed by one;
 * - discard punches a hole (the range reads as zeros and its blocks are freed);
 * - write-zeroes zeroes the range in place (fallocate ZERO_RANGE), or
 *   punches a hole when `unmap` is allowed;
 * - where the filesystem refuses either, zeros are written instead.
 *
 * @throws BlockError('EIO') if the file cannot be opened, or is empty.
 *
 * @example
 * ```ts
 * const disk = await openFileBackend('disk.img');
 * await disk.write(0, [Buffer.alloc(512, 1)], { fua: true });
 * await disk.close();
 * ```
 */
export async function openFileBackend(path: string, options: FileBackendOptions = {}): Promise<FileBackend> {
  const readOnly = options.readOnly === true;
  let fh: FileHandle;
  try {
    fh = await open(path, readOnly ? 'r' : 'r+');
  } catch (e) {
    throw toBlockError(e, `open ${path}`);
  }
  try {
    const st = await fh.stat();
    let bytes = st.size;
    if (st.isBlockDevice()) {
      bytes = native.blockDeviceSize(fh.fd);
      if (bytes < 0) throw new BlockError('EIO', `${path}: cannot read the block device's size (errno ${-bytes})`);
    } else if (!st.isFile()) {
      throw new BlockError('EIO', `${path} is neither a regular file nor a block device`);
    }
    const size = bytes - (bytes % SECTOR_SIZE);
    if (size === 0) throw new BlockError('EIO', `${path} is smaller than ${SECTOR_SIZE} bytes`);
    checkCapacity(size);
    return new FileDisk(path, fh, size, readOnly);
  } catch (e) {
    await fh.close().catch(() => {});
    throw e instanceof BlockError ? e : toBlockError(e, path);
  }
}

class FileDisk implements FileBackend {
  readonly capabilities: BlockCapabilities = { flush: true, discard: true, writeZeroes: true };
  private readonly inflight = new InFlight();
  private closing: Promise<void> | undefined;
  /** Cleared once the filesystem has refused a fallocate mode, to skip asking again. */
  private canPunch = true;
  private canZeroRange = true;
  /** False once preadv2(RWF_NOWAIT) was refused: then every read goes to the thread pool. */
  private canReadNowait = true;

  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly size: number,
    readonly readOnly: boolean,
  ) {}

  share(): SharedBackend {
    return { kind: 'file', path: this.path, readOnly: this.readOnly };
  }

  /**
   * At once when the page cache holds the whole range (preadv2 with
   * RWF_NOWAIT, on this thread, no Promise); else the rest goes to the
   * thread pool.
   */
  read(offset: number, buffers: readonly Uint8Array[]): MaybePromise<void> {
    this.inflight.checkOpen();
    const length = byteLength(buffers);
    checkRange(this.size, offset, length);
    if (length === 0) return;
    const cached = this.readCached(offset, buffers);
    if (cached === length) return;
    return this.inflight.track(this.io('read', offset, buffers, length, cached));
  }

  write(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): Promise<void> {
    this.inflight.checkOpen();
    checkWritable(this.readOnly, 'write');
    const length = byteLength(buffers);
    checkRange(this.size, offset, length);
    return this.inflight.run(async () => {
      await this.io('write', offset, buffers, length, 0);
      if (options?.fua) await this.datasync();
    });
  }

  flush(): Promise<void> {
    return this.inflight.run(() => this.datasync());
  }

  discard(offset: number, length: number): Promise<void> {
    this.inflight.checkOpen();
    checkWritable(this.readOnly, 'discard');
    checkRange(this.size, offset, length);
    return this.inflight.run(async () => {
      if (length > 0) await this.zeroRange(offset, length, true);
    });
  }

  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void> {
    this.inflight.checkOpen();
    checkWritable(this.readOnly, 'write-zeroes');
    checkRange(this.size, offset, length);
    return this.inflight.run(async () => {
      if (length > 0) await this.zeroRange(offset, length, options?.unmap === true);
    });
  }

  close(): Promise<void> {
    this.closing ??= this.inflight.drain().then(() => this.fh.close());
    return this.closing;
  }

  /**
   * Reads what the page cache holds right here (preadv2 with RWF_NOWAIT, no
   * thread hop); returns the bytes read (a prefix of the range), 0 when
   * nothing was cached or the kernel does not offer it.
   */
  private readCached(offset: number, list: readonly Uint8Array[]): number {
    if (!this.canReadNowait || list.length > 64) return 0;
    const n = native.preadvNowait(this.fh.fd, list, offset);
    if (n > 0) return n;
    // EAGAIN: not cached; anything else (EOPNOTSUPP, EINVAL...) means the path is not for this file.
    if (n !== -11) this.canReadNowait = false;
    return 0;
  }

  /** readv/writev from byte `done` on until the whole scatter list is done (they may transfer less). */
  private async io(op: 'read' | 'write', offset: number, buffers: readonly Uint8Array[], length: number, done: number): Promise<void> {
    while (done < length) {
      const list = sliceScatter(buffers, done, length - done);
      let n: number;
      try {
        n = op === 'read' ? (await this.fh.readv(list, offset + done)).bytesRead : (await this.fh.writev(list, offset + done)).bytesWritten;
      } catch (e) {
        throw toBlockError(e, `${op} at ${offset + done}`);
      }
      // The file shrank under us: past its end there is nothing to read.
      if (n === 0) throw new BlockError('EIO', `${op} at ${offset + done}: ${this.path} ended early`);
      done += n;
    }
  }

  private async datasync(): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (e) {
      throw toBlockError(e, 'fdatasync');
    }
  }

  /** Punches (when `unmap`) or zeroes a range; writes zeros where the filesystem refuses both. */
  private async zeroRange(offset: number, length: number, unmap: boolean): Promise<void> {
    if (unmap && this.canPunch) {
      const rc = await this.fallocate(FallocMode.PunchHole | FallocMode.KeepSize, offset, length);
      if (rc === 0) return;
      if (!refused(rc)) throw errnoError(rc, 'fallocate(PUNCH_HOLE)');
      this.canPunch = false;
    }
    if (this.canZeroRange) {
      const rc = await this.fallocate(FallocMode.ZeroRange | FallocMode.KeepSize, offset, length);
      if (rc === 0) return;
      if (!refused(rc)) throw errnoError(rc, 'fallocate(ZERO_RANGE)');
      this.canZeroRange = false;
    }
    if (!unmap && this.canPunch) {
      // Zeroing by punching still reads as zeros; only the allocation differs.
      const rc = await this.fallocate(FallocMode.PunchHole | FallocMode.KeepSize, offset, length);
      if (rc === 0) return;
      if (!refused(rc)) throw errnoError(rc, 'fallocate(PUNCH_HOLE)');
      this.canPunch = false;
    }
    const zeros = new Uint8Array(Math.min(ZERO_CHUNK, length));
    for (let done = 0; done < length; done += zeros.byteLength) {
      const n = Math.min(zeros.byteLength, length - done);
      await this.io('write', offset + done, [zeros.subarray(0, n)], n, 0);
    }
  }

  private async fallocate(mode: number, offset: number, length: number): Promise<number> {
    let rc: number;
    do rc = await native.fallocate(this.fh.fd, mode, offset, length);
    while (rc === -EINTR);
    return rc;
  }
}

/** The filesystem does not do this kind of fallocate: fall back. */
function refused(rc: number): boolean {
  return rc === -EOPNOTSUPP || rc === -ENOSYS || rc === -EINVAL;
}

const KNOWN: readonly BlockErrorCode[] = ['EIO', 'EROFS', 'ENOSPC'];

function toBlockError(e: unknown, what: string): BlockError {
  const code = (e as { code?: unknown }).code;
  const mapped: BlockErrorCode = code === 'EDQUOT' ? 'ENOSPC' : KNOWN.includes(code as BlockErrorCode) ? (code as BlockErrorCode) : 'EIO';
  return new BlockError(mapped, `${what}: ${e instanceof Error ? e.message : String(e)}`);
}

function errnoError(rc: number, what: string): BlockError {
  const errno = -rc;
  const code: BlockErrorCode = errno === ENOSPC || errno === EDQUOT ? 'ENOSPC' : errno === EROFS ? 'EROFS' : 'EIO';
  return new BlockError(code, `${what} failed: errno ${errno}`);
}
