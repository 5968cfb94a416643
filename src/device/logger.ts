/**
 * Minimal leveled logger for the server (`serve(..., { log })`); the CLI's
 * -v turns on debug output.
 */

/** Log sink used by the server. */
export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

/** Log levels in increasing severity. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3, silent: 4 };

/** A logger writing `[name] level: msg` lines to stderr at or above `level`. */
export function consoleLogger(name: string, level: LogLevel = 'warn'): Logger {
  const at = ORDER[level];
  const emit = (l: LogLevel) => (msg: string) => {
    if (ORDER[l] >= at) process.stderr.write(`[${name}] ${l}: ${msg}\n`);
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

/** A logger that discards everything. */
export const silentLogger: Logger = consoleLogger('', 'silent');
