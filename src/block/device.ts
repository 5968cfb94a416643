/**
 * The rules every block device (virtio-blk, NVMe, NBD) applies before a
 * request reaches its backend, in one place.
 */
import { BlockError, type BlockBackend, type BlockCapabilities } from './backend.js';
import { byteLength, checkAligned, checkRange, checkWritable, SECTOR_SIZE } from './checks.js';
import { InFlight } from './inflight.js';

/** A request kind {@link BlockDevice.check} can vet. */
export type BlockOperation = 'read' | 'write' | 'discard' | 'write-zeroes';

/** Options of {@link BlockDevice}. */
export interface BlockDeviceOptions {
  /**
   * Requests must start and end on multiples of this many bytes (a power of
   * two, at least 512). Default 512.
   */
  readonly blockSize?: number;
  /** Refuse writes, discards and write-zeroes even if the backend allows them. */
  readonly readOnly?: boolean;
}

/**
 * A {@link BlockBackend} with the checks a device owes its guest:
 *
 * - ranges must lie inside the disk, and start and end on `blockSize`
 *   boundaries: BlockError('ERANGE');
 * - writes, discards and write-zeroes to a read-only disk: BlockError('EROFS');
 * - discard or write-zeroes on a backend that lacks them: BlockError('ENOTSUP');
 * - requests after close(): BlockError('EIO').
 *
 * Requests run concurrently and complete in whatever order the backend
 * finishes them; one the backend finishes at once returns at once (a
 * refusal is thrown then, as the backend's own failures are). close() refuses new requests, waits for those in flight,
 * then closes the backend. A refused request never reaches the backend.
 *
 * @example
 * ```ts
 * const disk = new BlockDevice(await openFileBackend('disk.img'), { readOnly: true });
 * await disk.read(0, [new Uint8Array(4096)]);
 * await disk.close();
 * ```
 */
export class BlockDevice implements BlockBackend {
  /** Requests must be aligned to this many bytes. */
  readonly blockSize: number;
  readonly readOnly: boolean;
  private readonly inflight = new InFlight();
  private closing: Promise<void> | undefined;

  constructor(
    /** The storage below; the device closes it. */
    readonly backend: BlockBackend,
    options: BlockDeviceOptions = {},
  ) {
    const bs = options.blockSize ?? SECTOR_SIZE;
    if (!Number.isInteger(bs) || bs < SECTOR_SIZE || (bs & (bs - 1)) !== 0 || backend.size % bs !== 0) {
      throw new TypeError(`block size ${bs} must be a power of two >= 512 that divides the capacity (${backend.size})`);
    }
    this.blockSize = bs;
    this.readOnly = backend.readOnly || options.readOnly === true;
  }

  get size(): number {
    return this.backend.size;
  }

  get capabilities(): BlockCapabilities {
    return this.backend.capabilities;
  }

  /** Requests in flight now. */
  get inFlight(): number {
    return this.inflight.size;
  }

  /**
   * Throws the BlockError a request of kind `op` over [offset, offset +
   * length) would be refused with, without running it; for devices that
   * validate a batch (a range list) before starting any of it.
   */
  check(op: BlockOperation, offset: number, length: number): void {
    if (op !== 'read') checkWritable(this.readOnly, op);
    checkRange(this.size, offset, length);
    checkAligned(this.blockSize, offset, length);
    if (op === 'discard' && !this.backend.capabilities.discard) throw new BlockError('ENOTSUP', 'discard is not supported by this backend');
    if (op === 'write-zeroes' && !this.backend.capabilities.writeZeroes) throw new BlockError('ENOTSUP', 'write-zeroes is not supported by this backend');
  }

  /** Reads at once when the backend can (no Promise then), else returns its Promise. */
  read(offset: number, buffers: readonly Uint8Array[]): void | Promise<void> {
    this.inflight.checkOpen();
    this.check('read', offset, byteLength(buffers));
    return this.inflight.track(this.backend.read(offset, buffers));
  }

  write(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): void | Promise<void> {
    this.inflight.checkOpen();
    this.check('write', offset, byteLength(buffers));
    return this.inflight.track(this.backend.write(offset, buffers, options));
  }

  flush(): void | Promise<void> {
    this.inflight.checkOpen();
    // A read-only disk has nothing to make durable; flushing it is harmless.
    return this.inflight.track(this.backend.flush());
  }

  discard(offset: number, length: number): void | Promise<void> {
    this.inflight.checkOpen();
    this.check('discard', offset, length);
    return this.inflight.track(this.backend.discard(offset, length));
  }

  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): void | Promise<void> {
    this.inflight.checkOpen();
    this.check('write-zeroes', offset, length);
    return this.inflight.track(this.backend.writeZeroes(offset, length, options));
  }

  /** Refuses new requests, waits for those in flight, then closes the backend. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.inflight.drain().then(() => this.backend.close());
    return this.closing;
  }

}
