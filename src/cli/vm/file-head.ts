/** Reading the start of a file to recognize what it is (an ELF, a bzImage). */
import { closeSync, openSync, readSync } from 'node:fs';

/** The first `length` bytes of `file` (fewer when it is shorter); undefined when it cannot be read. */
export function readHead(file: string, length: number): Buffer | undefined {
  const head = Buffer.alloc(length);
  let n: number;
  try {
    const fd = openSync(file, 'r');
    try {
      n = readSync(fd, head, 0, length, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
  return head.subarray(0, n);
}
