/** Scatter lists: a byte range spread over several buffers, in order. */

/**
 * The part of a scatter list covering bytes [skip, skip + n), as views of
 * its buffers (no copy). Empty buffers are left out; a list shorter than
 * skip + n yields what it has.
 */
export function sliceScatter(list: readonly Uint8Array[], skip: number, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of list) {
    if (n === 0) break;
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    const len = Math.min(b.length - skip, n);
    out.push(b.subarray(skip, skip + len));
    n -= len;
    skip = 0;
  }
  return out;
}
