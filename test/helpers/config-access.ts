/** Little-endian accessors for a ConfigSpace, and an event recorder. */
import type { ConfigEvent, ConfigSpace } from '../../src/pci/index.js';

export const u8 = (c: ConfigSpace, off: number): number => c.read(off, 1)[0]!;
export const u16 = (c: ConfigSpace, off: number): number => c.read(off, 2).readUInt16LE(0);
export const u32 = (c: ConfigSpace, off: number): number => c.read(off, 4).readUInt32LE(0);
export const w16 = (c: ConfigSpace, off: number, v: number): void => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  c.write(off, b);
};
export const w32 = (c: ConfigSpace, off: number, v: number): void => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  c.write(off, b);
};

/** Collects events emitted by `c`. */
export function record(c: ConfigSpace): ConfigEvent[] {
  const events: ConfigEvent[] = [];
  c.onChange((e) => events.push(e));
  return events;
}
