/** Why an NBD connection could not be set up. */
import { BlockError } from '../backend.js';

/**
 * What went wrong while connecting: `refused` (the server said no to this
 * export: unknown, TLS required, policy; retrying will not help),
 * `protocol` (the peer broke the protocol or is not an NBD server), or
 * `connect` (no connection or it dropped; a retry may work).
 */
export type NbdFailure = 'refused' | 'protocol' | 'connect';

/** A connection or handshake failure; a BlockError('EIO') so block callers see one error type. */
export class NbdConnectError extends BlockError {
  constructor(
    readonly failure: NbdFailure,
    message: string,
  ) {
    super('EIO', message);
    this.name = 'NbdConnectError';
  }
}
