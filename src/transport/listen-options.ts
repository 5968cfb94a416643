/**
 * Options of a listening socket, checked before anything reaches the
 * kernel: the native layer would refuse a wrong type too, but here the
 * message names the option as the caller wrote it.
 */
import { describeValue } from '../values/describe.js';

/** Options of a listening socket (Listener, and serve()). */
export interface ListenOptions {
  /**
   * File mode of the socket, an integer in 0..0o777 (e.g. 0o660); owner-only
   * (0o600) unless asked otherwise. A string such as '600' is refused, not
   * read as octal.
   */
  mode?: number;
  /** Replace a stale socket file left at the path. Default true. */
  replaceStale?: boolean;
  /** Connections the kernel queues before accept, an integer in 0..2^31-1 (default 16). */
  backlog?: number;
}

/** The keys of ListenOptions, for callers that refuse unknown options. */
export const LISTEN_OPTION_KEYS: readonly string[] = ['mode', 'replaceStale', 'backlog'];

/**
 * Checks `options` before anything reaches the kernel; throws a TypeError
 * (wrong type) or RangeError (out of range) naming the option, e.g.
 * "serve: options.mode must be an integer in 0..0o777, got '600'".
 */
export function checkListenOptions(options: ListenOptions, where = 'listen'): void {
  const { mode, backlog, replaceStale } = options;
  if (mode !== undefined) {
    if (typeof mode !== 'number') {
      const hint = typeof mode === 'string' ? ' (write the number, e.g. 0o600: a string is not read as octal)' : '';
      throw new TypeError(`${where}: options.mode must be an integer in 0..0o777, got ${describeValue(mode)}${hint}`);
    }
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
      throw new RangeError(`${where}: options.mode must be an integer in 0..0o777, got ${Number.isInteger(mode) && mode > 0 ? `0o${mode.toString(8)}` : mode}`);
    }
  }
  if (backlog !== undefined) {
    if (typeof backlog !== 'number') throw new TypeError(`${where}: options.backlog must be an integer, got ${describeValue(backlog)}`);
    if (!Number.isInteger(backlog) || backlog < 0 || backlog > 0x7fffffff) throw new RangeError(`${where}: options.backlog must be an integer in 0..2147483647, got ${backlog}`);
  }
  if (replaceStale !== undefined && typeof replaceStale !== 'boolean') {
    throw new TypeError(`${where}: options.replaceStale must be a boolean, got ${describeValue(replaceStale)}`);
  }
}
