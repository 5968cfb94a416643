/**
 * The standard NBD URI format: `nbd://host[:port][/export]` for TCP and
 * `nbd+unix:///export?socket=/path` for a UNIX socket. TLS schemes
 * (`nbds://`, `nbds+unix://`) are recognised so they can be refused clearly.
 */
import { DEFAULT_PORT } from './protocol.js';

/** Where an NBD export lives: a TCP address or a UNIX socket, and the export's name. */
export type NbdAddress =
  | { readonly transport: 'tcp'; readonly host: string; readonly port: number; readonly exportName: string }
  | { readonly transport: 'unix'; readonly socketPath: string; readonly exportName: string };

/** A URI that is not a usable NBD URI. */
export class NbdUriError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NbdUriError';
  }
}

/**
 * Parses an NBD URI.
 *
 * @throws NbdUriError for another scheme, a TLS scheme, a missing socket
 * path, or a bad port.
 *
 * @example
 * ```ts
 * parseNbdUri('nbd://127.0.0.1:10809/disk'); // { transport: 'tcp', host: '127.0.0.1', port: 10809, exportName: 'disk' }
 * parseNbdUri('nbd+unix:///disk?socket=/run/nbd.sock'); // { transport: 'unix', socketPath: '/run/nbd.sock', exportName: 'disk' }
 * ```
 */
export function parseNbdUri(text: string): NbdAddress {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new NbdUriError(`'${text}' is not a URI (use nbd://host:port/export or nbd+unix:///export?socket=/path)`);
  }
  const scheme = url.protocol.slice(0, -1);
  if (scheme === 'nbds' || scheme === 'nbds+unix') throw new NbdUriError(`${scheme}:// needs TLS, which this NBD client does not support`);
  if (scheme !== 'nbd' && scheme !== 'nbd+unix') throw new NbdUriError(`'${text}': scheme must be nbd:// or nbd+unix://`);
  if (url.username !== '' || url.password !== '') throw new NbdUriError(`'${text}': user names are not supported`);
  const exportName = decode(url.pathname.replace(/^\//, ''), text);
  if (scheme === 'nbd+unix') {
    if (url.host !== '') throw new NbdUriError(`'${text}': nbd+unix:// takes no host (nbd+unix:///export?socket=/path)`);
    const socketPath = url.searchParams.get('socket');
    if (socketPath === null || socketPath === '') throw new NbdUriError(`'${text}': nbd+unix:// needs ?socket=/path`);
    return { transport: 'unix', socketPath, exportName };
  }
  if (url.hostname === '') throw new NbdUriError(`'${text}': nbd:// needs a host`);
  if (url.search !== '') throw new NbdUriError(`'${text}': nbd:// takes no query (did you mean nbd+unix://?)`);
  const port = url.port === '' ? DEFAULT_PORT : Number(url.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new NbdUriError(`'${text}': bad port`);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { transport: 'tcp', host, port, exportName };
}

/** Formats an address back as a URI, for messages. */
export function formatNbdAddress(a: NbdAddress): string {
  const name = encodeURIComponent(a.exportName);
  if (a.transport === 'unix') return `nbd+unix:///${name}?socket=${a.socketPath}`;
  const host = a.host.includes(':') ? `[${a.host}]` : a.host;
  return `nbd://${host}:${a.port}/${name}`;
}

function decode(s: string, text: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new NbdUriError(`'${text}': bad percent-encoding in the export name`);
  }
}
