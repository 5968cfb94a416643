/** errno value for "invalid argument", used for malformed accesses and descriptions. */
export const EINVAL = 22;

/** errno value for "I/O error", used when a device hook misbehaves. */
export const EIO = 5;

/**
 * Error thrown by the PCI model: an invalid device description, an access
 * outside config space, or a snapshot that does not fit this device.
 * `errno` tells the server which error reply to send.
 */
export class PciConfigError extends Error {
  /** errno-like code for the protocol error reply (EINVAL unless stated). */
  readonly errno: number;

  /** Creates an error with a message and an errno (default EINVAL). */
  constructor(message: string, errno: number = EINVAL) {
    super(message);
    this.name = 'PciConfigError';
    this.errno = errno;
  }
}

/** Throws a PciConfigError with `message` unless `condition` holds. */
export function check(condition: boolean, message: string, errno: number = EINVAL): asserts condition {
  if (!condition) throw new PciConfigError(message, errno);
}
