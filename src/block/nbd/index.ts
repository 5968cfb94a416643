/** The NBD client backend. */
export { openNbdBackend, type NbdBackend, type NbdBackendOptions, type NbdReconnectOptions } from './backend.js';
export { NbdConnectError, type NbdFailure } from './errors.js';
export { parseNbdUri, formatNbdAddress, NbdUriError, type NbdAddress } from './uri.js';
