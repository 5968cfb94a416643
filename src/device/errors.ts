import { Errno } from '../protocol/constants.js';

/**
 * Errors a device callback may throw to choose the errno of the error reply.
 * Any other exception becomes EIO.
 */
export class DeviceError extends Error {
  /**
   * @param errno positive errno for the reply (e.g. 22 for EINVAL)
   * @param message what went wrong, for logs
   */
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'DeviceError';
  }
}

/** Errno values the server uses (Linux numbering): the protocol layer's table. */
export { Errno };

/** The errno to reply with for an exception thrown while serving a request. */
export function errnoOf(e: unknown): number {
  if (e && typeof e === 'object' && 'errno' in e) {
    const n = (e as { errno: unknown }).errno;
    if (typeof n === 'number' && Number.isInteger(n) && n > 0 && n < 4096) return n;
  }
  return Errno.EIO;
}
