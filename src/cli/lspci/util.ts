/** Small formatting helpers for `lspci`. */

/** `name+` or `name-`. */
export function flag(name: string, on: boolean | number): string {
  return `${name}${on ? '+' : '-'}`;
}

/** Flags for the bits of `value`, space separated: `[['Mem', 0x2], ...]`. */
export function bitFlags(value: number, bits: readonly (readonly [string, number])[]): string {
  return bits.map(([name, mask]) => flag(name, (value & mask) !== 0)).join(' ');
}

/** Lower-case hex, zero-padded to `width` digits. */
export function hex(n: number | bigint, width: number): string {
  const v = typeof n === 'bigint' ? n : n >>> 0;
  return v.toString(16).padStart(width, '0');
}

/** A size as lspci prints it: 256, 4K, 1M, 2G ... */
export function formatSize(size: number): string {
  const units = ['', 'K', 'M', 'G', 'T', 'P', 'E'];
  let u = 0;
  while (size >= 1024 && size % 1024 === 0 && u < units.length - 1) {
    size /= 1024;
    u++;
  }
  return `${size}${units[u]}`;
}

/** True when `size` bytes at `offset` lie below `limit`. */
export function fits(offset: number, size: number, limit: number): boolean {
  return offset >= 0 && offset + size <= limit;
}
