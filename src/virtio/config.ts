/**
 * Device-specific configuration (the "device config" area of virtio-pci),
 * declared once as an ordered list of fields: offsets follow from the
 * order, the driver reads the bytes, and the device reads and changes
 * fields by name. A change made by the device bumps config_generation and
 * raises the configuration-change interrupt. The framework's own devices
 * declare theirs with the struct tool (layouts.ts) and hand its field list
 * over ({@link configFieldsOf}).
 */
import type { Struct } from '../layout/struct.js';

/** A field's type: a little-endian integer, or padding of N bytes. */
export type ConfigFieldType = 'u8' | 'u16' | 'u32' | 'u64' | { pad: number };

/** One field of a config layout. */
export interface ConfigField {
  readonly name: string;
  readonly type: ConfigFieldType;
  /** The driver may write it (default false: writes are ignored). */
  readonly writable?: boolean;
}

/** Initial values by field name (numbers, or bigints for u64). */
export type ConfigValues = Record<string, number | bigint>;

const WIDTHS = { u8: 1, u16: 2, u32: 4, u64: 8 } as const;

/**
 * The config fields of a struct declared with the layout tool, in its order:
 * its integers (u64 either way), its reserved runs as padding, none writable.
 */
export function configFieldsOf(struct: Struct<unknown>): ConfigField[] {
  return struct.fields.map((f): ConfigField => {
    if (f.type === 'reserved') return { name: f.name, type: { pad: f.size } };
    if (typeof f.type === 'object') throw new TypeError(`config field ${f.name}: a run of bytes is not a config field`);
    return { name: f.name, type: f.type === 'u64big' ? 'u64' : f.type };
  });
}

interface Placed {
  readonly offset: number;
  readonly width: number;
  readonly writable: boolean;
}

/** The device config of one virtio device. */
export class VirtioConfig {
  /** The bytes the driver sees. */
  readonly bytes: Buffer;
  private readonly fields = new Map<string, Placed>();
  /** Told after the device changed a field (the transport raises the interrupt). */
  onDeviceChange: () => void = () => {};
  /** Told after the driver wrote a writable field. */
  onDriverWrite: (name: string, value: number | bigint) => void = () => {};

  constructor(layout: readonly ConfigField[], values: ConfigValues = {}) {
    let offset = 0;
    for (const f of layout) {
      const width = typeof f.type === 'object' ? f.type.pad : WIDTHS[f.type];
      if (typeof f.type !== 'object') {
        if (this.fields.has(f.name)) throw new RangeError(`config field ${f.name} declared twice`);
        // Natural alignment, as the spec's structures have it.
        if (offset % width !== 0) throw new RangeError(`config field ${f.name} at ${offset} is not aligned to ${width}`);
        this.fields.set(f.name, { offset, width, writable: f.writable ?? false });
      }
      offset += width;
    }
    this.bytes = Buffer.alloc(offset);
    for (const [name, v] of Object.entries(values)) this.put(name, v);
  }

  /** Size in bytes. */
  get size(): number {
    return this.bytes.length;
  }

  /** A field's value (bigint for u64). */
  get(name: string): number | bigint {
    const f = this.field(name);
    switch (f.width) {
      case 1:
        return this.bytes.readUInt8(f.offset);
      case 2:
        return this.bytes.readUInt16LE(f.offset);
      case 4:
        return this.bytes.readUInt32LE(f.offset);
      default:
        return this.bytes.readBigUInt64LE(f.offset);
    }
  }

  /** Changes a field as the device, and tells the driver (config interrupt). */
  set(name: string, value: number | bigint): void {
    this.put(name, value);
    this.onDeviceChange();
  }

  /** Reads for the driver; out-of-range bytes read as 0. */
  read(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    if (offset < this.bytes.length) this.bytes.copy(out, 0, offset, Math.min(this.bytes.length, offset + length));
    return out;
  }

  /** A driver write: applied to whole writable fields only, others ignored. */
  write(offset: number, data: Uint8Array): void {
    for (const [name, f] of this.fields) {
      if (f.writable && f.offset === offset && f.width === data.length) {
        this.bytes.set(data, offset);
        this.onDriverWrite(name, this.get(name));
      }
    }
  }

  /** Restores bytes saved from an identical layout. */
  restore(bytes: Uint8Array): void {
    if (bytes.length !== this.bytes.length) throw new RangeError(`config of ${bytes.length} bytes, this layout has ${this.bytes.length}`);
    this.bytes.set(bytes);
  }

  private put(name: string, value: number | bigint): void {
    const f = this.field(name);
    const v = BigInt.asUintN(f.width * 8, BigInt(value));
    if (f.width === 8) this.bytes.writeBigUInt64LE(v, f.offset);
    else this.bytes.writeUIntLE(Number(v), f.offset, f.width);
  }

  private field(name: string): Placed {
    const f = this.fields.get(name);
    if (!f) throw new RangeError(`no config field ${name}`);
    return f;
  }
}
