/**
 * Checks of serve()'s options, before anything reaches the kernel: a wrong
 * type throws a TypeError, a value out of range a RangeError, each naming
 * the option ("serve: options.mode must be an integer in 0..0o777, got the
 * string \"600\""). A JavaScript caller or a JSON file gets the same checks
 * TypeScript gives at compile time, and an unknown option (a typo such as
 * `mdoe`) is refused instead of silently ignored.
 */
import { checkListenOptions, LISTEN_OPTION_KEYS } from '../transport/listen-options.js';
import { describeValue } from '../values/describe.js';
import { DEFAULT_LIMITS, type ServerLimits } from './context.js';
import type { LogLevel } from '../device/logger.js';

const WHERE = 'serve';
const SERVE_OPTION_KEYS = [...LISTEN_OPTION_KEYS, 'limits', 'log', 'poll'];
const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent'];
const LOGGER_METHODS = ['debug', 'info', 'warn', 'error'] as const;
/** The kernel passes at most this many fds with one message (SCM_MAX_FD). */
const MAX_MSG_FDS = 253;

/** Default idle window of polling mode, in milliseconds. */
export const DEFAULT_POLL_IDLE_MS = 1;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function refuseUnknownKeys(o: Record<string, unknown>, known: readonly string[], what: string): void {
  for (const key of Object.keys(o)) {
    if (!known.includes(key)) throw new TypeError(`${WHERE}: unknown option ${what}.${key} (known: ${known.join(', ')})`);
  }
}

/** The busy-poll idle window `poll` asks for, in ms (0: off). Throws TypeError/RangeError on a bad value. */
export function resolvePollIdleMs(poll: unknown): number {
  if (poll === undefined || poll === false) return 0;
  if (poll === true) return DEFAULT_POLL_IDLE_MS;
  if (!isPlainObject(poll)) throw new TypeError(`${WHERE}: options.poll must be a boolean or { idleMs }, got ${describeValue(poll)}`);
  refuseUnknownKeys(poll, ['idleMs'], 'options.poll');
  const ms = poll.idleMs ?? DEFAULT_POLL_IDLE_MS;
  if (typeof ms !== 'number') throw new TypeError(`${WHERE}: options.poll.idleMs must be a number of ms, got ${describeValue(ms)}`);
  if (!Number.isFinite(ms) || ms <= 0 || ms > 60_000) throw new RangeError(`${WHERE}: options.poll.idleMs must be in (0, 60000], got ${ms}`);
  return ms;
}

function checkLimits(limits: unknown): void {
  if (!isPlainObject(limits)) throw new TypeError(`${WHERE}: options.limits must be an object, got ${describeValue(limits)}`);
  refuseUnknownKeys(limits, Object.keys(DEFAULT_LIMITS), 'options.limits');
  for (const [key, value] of Object.entries(limits) as [keyof ServerLimits, unknown][]) {
    if (value === undefined) continue;
    const name = `options.limits.${key}`;
    if (typeof value !== 'number') throw new TypeError(`${WHERE}: ${name} must be a positive integer, got ${describeValue(value)}`);
    const max = key === 'maxMsgFds' ? MAX_MSG_FDS : Number.MAX_SAFE_INTEGER;
    if (!Number.isInteger(value) || value < 1 || value > max) throw new RangeError(`${WHERE}: ${name} must be an integer in 1..${max}, got ${value}`);
  }
}

function checkLog(log: unknown): void {
  if (typeof log === 'string') {
    if (!(LOG_LEVELS as readonly string[]).includes(log)) throw new RangeError(`${WHERE}: options.log must be a Logger or one of ${LOG_LEVELS.join(', ')}, got ${describeValue(log)}`);
    return;
  }
  const missing = isPlainObject(log) ? LOGGER_METHODS.filter((m) => typeof log[m] !== 'function') : LOGGER_METHODS;
  if (missing.length > 0) {
    throw new TypeError(`${WHERE}: options.log must be a Logger (debug, info, warn, error functions) or a level name, got ${describeValue(log)}${isPlainObject(log) ? ` without ${missing.join(', ')}` : ''}`);
  }
}

/** Checks every option of serve() (see the file comment); returns nothing, throws on the first bad one. */
export function checkServeOptions(options: unknown): void {
  if (options === undefined) return;
  if (!isPlainObject(options)) throw new TypeError(`${WHERE}: options must be an object, got ${describeValue(options)}`);
  refuseUnknownKeys(options, SERVE_OPTION_KEYS, 'options');
  checkListenOptions(options, WHERE);
  if (options.limits !== undefined) checkLimits(options.limits);
  if (options.log !== undefined) checkLog(options.log);
  resolvePollIdleMs(options.poll);
}
