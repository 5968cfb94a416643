/**
 * A RAM disk in a memfd: like {@link ramBackend}, but its memory is a file
 * that other threads map too, so queues served on worker threads share
 * one disk. The memfd is sealed against shrinking and growing, so a
 * mapping of it can never fault; pages are allocated on first write, and
 * discard punches them out again.
 */
import { check, FallocMode, FileSeal, native, type MapHandle } from '../native/index.js';
import { BlockError, type BlockCapabilities } from './backend.js';
import { byteLength, checkCapacity, checkRange, checkWritable } from './checks.js';
import { InFlight } from './inflight.js';
import type { ShareableBackend, SharedBackend } from './shared.js';

/** Options of {@link memfdBackend}. */
export interface MemfdBackendOptions {
  /** Refuse writes, discards and write-zeroes (EROFS). */
  readonly readOnly?: boolean;
}

/**
 * Creates a memfd RAM disk of `size` bytes (a positive multiple of 512),
 * reading as zeros until written. Reads, writes and flushes finish at once.
 *
 * @example
 * ```ts
 * const disk = memfdBackend(64 << 20);
 * const blk = virtioBlk({ backend: disk, queues: 2, workers: 2 });
 * ```
 */
export function memfdBackend(size: number, options: MemfdBackendOptions = {}): ShareableBackend {
  checkCapacity(size);
  const fd = native.memfd('muser-ramdisk', size, true);
  check('memfd', fd);
  try {
    check('seal', native.addSeals(fd, FileSeal.SHRINK | FileSeal.GROW | FileSeal.SEAL));
    return new MemfdDisk(fd, size, options.readOnly === true);
  } catch (e) {
    native.close(fd);
    throw e;
  }
}

/**
 * Opens the disk behind a handle from {@link ShareableBackend.share} of a
 * memfd backend; takes ownership of its fd.
 */
export function openSharedMemfd(handle: Extract<SharedBackend, { kind: 'memfd' }>): ShareableBackend {
  try {
    const seals = native.fdSeals(handle.fd);
    if (seals < 0 || (seals & FileSeal.SHRINK) === 0) throw new BlockError('EIO', 'shared memfd disk is not sealed against shrinking');
    if (native.fdSize(handle.fd) !== handle.size) throw new BlockError('EIO', 'shared memfd disk has the wrong size');
    return new MemfdDisk(handle.fd, handle.size, handle.readOnly);
  } catch (e) {
    native.close(handle.fd);
    throw e;
  }
}

class MemfdDisk implements ShareableBackend {
  readonly capabilities: BlockCapabilities = { flush: true, discard: true, writeZeroes: true };
  private readonly inflight = new InFlight();
  private readonly bytes: Uint8Array;
  private readonly handle: MapHandle;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly fd: number,
    readonly size: number,
    readonly readOnly: boolean,
  ) {
    const m = native.mmap(fd, 0, size, true);
    if (typeof m === 'number') throw new BlockError('EIO', `cannot map the memfd disk: errno ${-m}`);
    this.bytes = new Uint8Array(m[0]);
    this.handle = m[1];
  }

  share(): SharedBackend {
    if (this.closing) throw new BlockError('EIO', 'the disk is closed');
    return { kind: 'memfd', fd: check('dup', native.dup(this.fd)), size: this.size, readOnly: this.readOnly };
  }

  /** Always at once: the memory is mapped. */
  read(offset: number, buffers: readonly Uint8Array[]): void {
    this.inflight.checkOpen();
    checkRange(this.size, offset, byteLength(buffers));
    let at = offset;
    for (const b of buffers) {
      b.set(this.bytes.subarray(at, at + b.length));
      at += b.length;
    }
  }

  write(offset: number, buffers: readonly Uint8Array[]): void {
    this.inflight.checkOpen();
    checkWritable(this.readOnly, 'write');
    checkRange(this.size, offset, byteLength(buffers));
    let at = offset;
    for (const b of buffers) {
      this.bytes.set(b, at);
      at += b.length;
    }
  }

  /** Memory is as durable as it gets; nothing to do. */
  flush(): void {
    this.inflight.checkOpen();
  }

  discard(offset: number, length: number): Promise<void> {
    return this.zero('discard', offset, length);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.zero('write-zeroes', offset, length);
  }

  close(): Promise<void> {
    this.closing ??= this.inflight.drain().then(() => {
      native.munmap(this.handle, this.bytes.buffer as ArrayBuffer);
      native.close(this.fd);
    });
    return this.closing;
  }

  /** Punches the range out (its pages are freed and read as zeros); clears it where that is refused. */
  private zero(what: string, offset: number, length: number): Promise<void> {
    return this.inflight.run(async () => {
      checkWritable(this.readOnly, what);
      checkRange(this.size, offset, length);
      if (length === 0) return;
      const rc = await native.fallocate(this.fd, FallocMode.PunchHole | FallocMode.KeepSize, offset, length);
      if (rc !== 0) this.bytes.fill(0, offset, offset + length);
    });
  }
}
