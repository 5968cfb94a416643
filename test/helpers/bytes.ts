/** Small byte-building helpers shared by tests. */

/** `n` as a 16-bit little-endian integer (2 bytes). */
export function le16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n & 0xffff);
  return b;
}

/** `n` as a 32-bit little-endian integer (4 bytes); negative values wrap, so -1 is 0xffffffff. */
export function le32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

/** `n` as a 64-bit little-endian integer (8 bytes); negative values wrap (two's complement). */
export function le64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(n)));
  return b;
}

/** Bytes written as hex text; spaces and `|` (to show field boundaries) are ignored. */
export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/[\s|]/g, ''), 'hex');
}

/** `length` bytes that differ with `seed` (the high bytes of a 32-bit LCG): data to write and read back. */
export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = (Math.imul(seed, 0x9e3779b1) + 1) >>> 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
