/**
 * Warnings about what a guest's driver did that the device refused (an
 * access to no register, a malformed request, a command that failed),
 * rate-limited: a driver repeating its mistake in a loop cannot flood the
 * log, and what was held back is counted and reported when the window ends.
 */
import type { Logger } from './logger.js';

/** Warnings shown per window; the rest are counted. */
const MAX_PER_WINDOW = 5;
const WINDOW_MS = 10_000;

export class RateLimitedWarnings {
  private windowStart = 0;
  private shown = 0;
  private suppressed = 0;

  /**
   * @param log where warnings go (looked up at each warning: a device's
   *   logger changes with the client it serves; undefined drops them)
   * @param what what is counted, for the summary (`refused region accesses`)
   */
  constructor(
    private readonly log: () => Logger | undefined,
    private readonly what: string,
  ) {}

  /** Warns `message`, unless this window already showed its share. */
  warn(message: string): void {
    const log = this.log();
    if (!log) return;
    const now = Date.now();
    if (now - this.windowStart >= WINDOW_MS) {
      if (this.suppressed > 0) log.warn(`${this.suppressed} more ${this.what} in the last ${WINDOW_MS / 1000} s not shown`);
      this.windowStart = now;
      this.shown = 0;
      this.suppressed = 0;
    }
    if (this.shown >= MAX_PER_WINDOW) {
      this.suppressed++;
      return;
    }
    this.shown++;
    log.warn(message);
  }
}
