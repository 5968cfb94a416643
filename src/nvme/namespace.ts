/**
 * A namespace: a {@link BlockBackend} seen through the shared block-layer
 * checks ({@link BlockDevice}), with its NVMe identity (NSID, LBA size,
 * NGUID and EUI-64 derived from the controller serial).
 */
import { createHash } from 'node:crypto';
import type { BlockBackend, BlockCapabilities } from '../block/backend.js';
import { BlockDevice } from '../block/device.js';

/** One namespace of a controller. */
export class Namespace {
  readonly disk: BlockDevice;
  readonly lbaSize: number;
  /** Capacity in logical blocks. */
  readonly blocks: number;
  readonly nguid: Buffer;
  readonly eui64: Buffer;

  constructor(
    /** 1-based namespace id. */
    readonly id: number,
    backend: BlockBackend,
    options: { readOnly?: boolean; lbaSize?: number; serial: string },
  ) {
    this.lbaSize = options.lbaSize ?? 512;
    this.disk = new BlockDevice(backend, { readOnly: options.readOnly, blockSize: this.lbaSize });
    this.blocks = backend.size / this.lbaSize;
    const h = createHash('sha256').update(`muser-nvme:${options.serial}:${id}`).digest();
    this.nguid = h.subarray(0, 16);
    this.eui64 = h.subarray(16, 24);
  }

  get readOnly(): boolean {
    return this.disk.readOnly;
  }

  get capabilities(): BlockCapabilities {
    return this.disk.capabilities;
  }

  /** log2 of the LBA size (LBADS). */
  get lbads(): number {
    return Math.log2(this.lbaSize);
  }
}

/**
 * `count` equal slices of one backend, as separate backends: how one image
 * file serves several namespaces. Each slice keeps to its own range; close()
 * of the last slice closes the backend.
 */
export function sliceBackend(backend: BlockBackend, count: number, align = 4096): BlockBackend[] {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`slice count must be a positive integer, got ${count}`);
  const size = Math.floor(backend.size / count / align) * align;
  if (size === 0) throw new RangeError(`a ${backend.size}-byte backend cannot be split into ${count} namespaces`);
  if (count === 1) return [backend];
  let open = count;
  return Array.from({ length: count }, (_, i): BlockBackend => {
    const base = i * size;
    let closed = false;
    return {
      size,
      readOnly: backend.readOnly,
      capabilities: backend.capabilities,
      read: (offset, buffers) => backend.read(base + offset, buffers),
      write: (offset, buffers, options) => backend.write(base + offset, buffers, options),
      flush: () => backend.flush(),
      discard: (offset, length) => backend.discard(base + offset, length),
      writeZeroes: (offset, length, options) => backend.writeZeroes(base + offset, length, options),
      close: async () => {
        if (closed) return;
        closed = true;
        if (--open === 0) await backend.close();
      },
    };
  });
}
