/**
 * Memory a device keeps across the death of its process. Under `--isolate`
 * the parent owns it (a part of the connection's journal, a memfd that
 * outlives every child): what one child stored there, its successor finds.
 *
 * A checkpoint holds what requests changed; this holds what changes without
 * a request and cannot wait for one: which requests a device took from
 * rings in guest memory and has not completed yet (virtio's inflight log,
 * NVMe's fetched commands and queue positions). Stores into it are plain
 * memory stores, no system call; a process dies between two stores, never
 * inside one, so a record written field by field in a safe order is safe.
 */

/** Named areas of memory that outlive the device's process. */
export interface PersistentMemory {
  /**
   * The area named `name` of `size` bytes: the same bytes in this process
   * and, after a crash, in its successor. A new area is zeroed. Throws a
   * RangeError when the store is full or `name` exists with another size.
   */
  area(name: string, size: number): Uint8Array;
  /**
   * Where `area` lies in the file behind this memory (a memfd), so that
   * another thread of the process can map the same bytes; undefined when
   * it cannot be mapped there.
   */
  locate?(area: Uint8Array): { fd: number; offset: number } | undefined;
}

/** Longest area name, in UTF-8 bytes. */
export const MAX_AREA_NAME = 48;

/** Size of one directory entry: name (48), offset (f64), size (f64). */
const ENTRY = MAX_AREA_NAME + 16;

/**
 * {@link PersistentMemory} laid out in one block of shared memory: a
 * directory of `entries` names, then the areas, allocated in order. The
 * directory entry is written only after its area is zeroed, and its size
 * last: a crash mid-allocation leaves no entry (and some unused bytes).
 */
export class PersistentBlock implements PersistentMemory {
  private readonly view: DataView;
  private readonly dataAt: number;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly entries = 256,
    /** Where `bytes` starts in a file another thread can map, if any. */
    private readonly file?: { fd: number; offset: number },
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // Word 0: bytes allocated after the directory.
    this.dataAt = 8 + entries * ENTRY;
    if (this.dataAt > bytes.length) throw new RangeError(`persistent memory of ${bytes.length} bytes cannot hold ${entries} entries`);
  }

  /** Forgets every area (a new connection starts). */
  clear(): void {
    this.bytes.fill(0, 0, this.dataAt);
    this.view.setFloat64(0, 0, true);
  }

  area(name: string, size: number): Uint8Array {
    const key = Buffer.from(name, 'utf8');
    if (key.length === 0 || key.length > MAX_AREA_NAME) throw new RangeError(`persistent area name must be 1..${MAX_AREA_NAME} UTF-8 bytes, got ${JSON.stringify(name)}`);
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`persistent area '${name}': size must be a positive integer, got ${String(size)}`);
    let free = -1;
    for (let i = 0; i < this.entries; i++) {
      const at = 8 + i * ENTRY;
      const areaSize = this.view.getFloat64(at + MAX_AREA_NAME + 8, true);
      if (areaSize === 0) {
        free = at;
        break;
      }
      if (this.nameAt(at).equals(key)) {
        if (areaSize !== size) throw new RangeError(`persistent area '${name}' exists with ${areaSize} bytes, asked for ${size}`);
        const offset = this.view.getFloat64(at + MAX_AREA_NAME, true);
        return this.bytes.subarray(offset, offset + size);
      }
    }
    if (free < 0) throw new RangeError(`persistent memory: all ${this.entries} areas are in use (asked for '${name}')`);
    const used = this.view.getFloat64(0, true);
    // Areas start 8-byte aligned, so a device can lay words over them.
    const offset = this.dataAt + Math.ceil(used / 8) * 8;
    if (offset + size > this.bytes.length) throw new RangeError(`persistent memory is full: '${name}' needs ${size} bytes, ${Math.max(0, this.bytes.length - offset)} are left`);
    this.bytes.fill(0, offset, offset + size);
    this.view.setFloat64(0, offset + size - this.dataAt, true);
    this.bytes.fill(0, free, free + MAX_AREA_NAME);
    this.bytes.set(key, free);
    this.view.setFloat64(free + MAX_AREA_NAME, offset, true);
    this.view.setFloat64(free + MAX_AREA_NAME + 8, size, true);
    return this.bytes.subarray(offset, offset + size);
  }

  locate(area: Uint8Array): { fd: number; offset: number } | undefined {
    const at = area.byteOffset - this.bytes.byteOffset;
    if (!this.file || area.buffer !== this.bytes.buffer || at < 0 || at + area.length > this.bytes.length) return undefined;
    return { fd: this.file.fd, offset: this.file.offset + at };
  }

  private nameAt(at: number): Buffer {
    const raw = this.bytes.subarray(at, at + MAX_AREA_NAME);
    const end = raw.indexOf(0);
    return Buffer.from(raw.buffer, raw.byteOffset, end < 0 ? MAX_AREA_NAME : end);
  }
}
