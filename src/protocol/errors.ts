/**
 * The one error type the protocol codec throws on bad input.
 */
import { Errno } from './constants.js';

const NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Errno).map(([name, value]) => [value, name]),
);

/**
 * A message (or part of one) is malformed. `errno` is the Linux errno to
 * put in the error reply (EINVAL for bad lengths, flags and values, E2BIG
 * for oversized JSON, ...). Decoders throw nothing else.
 */
export class ProtocolError extends Error {
  /** Linux errno describing the fault. */
  readonly errno: number;

  constructor(errno: number, message: string) {
    super(`${NAMES.get(errno) ?? `errno ${errno}`}: ${message}`);
    this.name = 'ProtocolError';
    this.errno = errno;
  }
}

/** Throws `ProtocolError(EINVAL, message)`. */
export function invalid(message: string): never {
  throw new ProtocolError(Errno.EINVAL, message);
}
