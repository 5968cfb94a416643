/** `muser lspci -x`: config space as a hex dump, the way `lspci -x` prints it. */

/** Bytes `lspci -x`, `-xxx` and `-xxxx` show: the header, the 256-byte space, everything. */
export function dumpLength(xCount: number, configSize: number): number {
  if (xCount <= 0) return 0;
  const wanted = xCount >= 4 ? 4096 : xCount >= 3 ? 256 : 64;
  return Math.min(wanted, configSize);
}

/** `00: 86 80 ab 25 ...`, 16 bytes a line; offsets of 0x100 and up take three digits, as lspci prints them. */
export function formatHexDump(config: Uint8Array, length: number): string {
  const lines: string[] = [];
  for (let off = 0; off < Math.min(length, config.length); off += 16) {
    const bytes = Array.from(config.subarray(off, off + 16), (b) => b.toString(16).padStart(2, '0'));
    lines.push(`${off.toString(16).padStart(2, '0')}: ${bytes.join(' ')}`);
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}
