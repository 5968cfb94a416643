/** A logger for tests that keeps what it is told, as `level: message` lines. */
import type { Logger } from '../../src/device/logger.js';

export function recordingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (m: string) => void lines.push(`${level}: ${m}`);
  return { log: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, lines };
}
