/** Small byte-building helpers shared by tests. */

/** `n` as a signed 64-bit little-endian integer (8 bytes). */
export function le64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(BigInt(n));
  return b;
}
