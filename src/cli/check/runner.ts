/** Runs the checks in order against one socket. */
import { PROTOCOL_CHECKS } from './checks-protocol.js';
import { CONFIG_CHECKS } from './checks-config.js';
import { DMA_IRQ_CHECKS } from './checks-dma-irq.js';
import { LIFECYCLE_CHECKS } from './checks-lifecycle.js';
import { HOSTILE_CHECKS } from './checks-hostile.js';
import { Session } from './context.js';
import { CheckFailure, CheckSkip, type Check, type CheckResult } from './types.js';

/** Every check, in the order they run. */
export const ALL_CHECKS: readonly Check[] = [...PROTOCOL_CHECKS, ...CONFIG_CHECKS, ...DMA_IRQ_CHECKS, ...LIFECYCLE_CHECKS, ...HOSTILE_CHECKS];

/** Options for {@link runChecks}. */
export interface CheckOptions {
  /** Milliseconds to wait for each reply (default 2000). */
  timeoutMs?: number;
  /** Only checks whose id starts with one of these. */
  only?: readonly string[];
  /** Called as each check finishes. */
  onResult?(result: CheckResult): void;
}

/** Runs the checks against the server at `path`. */
export async function runChecks(path: string, options: CheckOptions = {}): Promise<CheckResult[]> {
  const session = new Session(path, options.timeoutMs ?? 2000);
  const results: CheckResult[] = [];
  const checks = ALL_CHECKS.filter((c) => !options.only || options.only.some((p) => c.id === p || c.id.startsWith(`${p}.`) || c.id.startsWith(p)));
  try {
    for (const check of checks) {
      let result: CheckResult;
      try {
        const detail = await check.run(session);
        result = { id: check.id, title: check.title, status: 'pass', ...(detail ? { detail } : {}) };
      } catch (e) {
        const status = e instanceof CheckSkip ? 'skip' : 'fail';
        const message = e instanceof CheckFailure || e instanceof CheckSkip ? e.message : `${(e as Error).name}: ${(e as Error).message}`;
        result = { id: check.id, title: check.title, status, detail: message };
        // Whatever the failure left on this connection, the next check starts afresh.
        if (status === 'fail') session.disconnect();
      }
      results.push(result);
      options.onResult?.(result);
    }
  } finally {
    session.close();
  }
  return results;
}
