/** Runs the checks in order against one socket. */
import { PROTOCOL_CHECKS } from './checks-protocol.js';
import { CONFIG_CHECKS } from './checks-config.js';
import { DMA_CHECKS } from './checks-dma.js';
import { IRQ_CHECKS } from './checks-irq.js';
import { LIFECYCLE_CHECKS } from './checks-lifecycle.js';
import { HOSTILE_CHECKS } from './checks-hostile.js';
import { CONNECTION_CHECKS } from './checks-connection.js';
import { Session } from './context.js';
import { CheckFailure, CheckSkip, type Check, type CheckResult } from './types.js';

/**
 * Every check, in the order they run: first those on the shared connection
 * (the run's first), last those that need connections of their own.
 */
export const ALL_CHECKS: readonly Check[] = [...PROTOCOL_CHECKS, ...CONFIG_CHECKS, ...DMA_CHECKS, ...IRQ_CHECKS, ...LIFECYCLE_CHECKS, ...HOSTILE_CHECKS, ...CONNECTION_CHECKS];

/** Options for {@link runChecks}. */
export interface CheckOptions {
  /** Milliseconds to wait for each reply (default 2000). */
  timeoutMs?: number;
  /** Only checks whose id starts with one of these. */
  only?: readonly string[];
  /** Called as each check finishes. */
  onResult?(result: CheckResult): void;
}

/**
 * Runs the checks against the server at `path`. Rejects with a
 * ConnectError when the socket cannot be reached at all (nothing there,
 * nobody listening, or a connection not accepted within the timeout).
 */
export async function runChecks(path: string, options: CheckOptions = {}): Promise<CheckResult[]> {
  const session = new Session(path, options.timeoutMs ?? 2000);
  const results: CheckResult[] = [];
  const checks = ALL_CHECKS.filter((c) => !options.only || options.only.some((p) => c.id === p || c.id.startsWith(`${p}.`) || c.id.startsWith(p)));
  try {
    await session.open();
    for (const check of checks) {
      session.check = check.id;
      let result: CheckResult;
      try {
        const detail = await check.run(session);
        const odd = session.drainUnexpected();
        if (odd.length > 0) throw new CheckFailure(`the connection is out of step: ${odd.join('; ')}`);
        result = { id: check.id, title: check.title, status: 'pass', ...(detail ? { detail } : {}) };
      } catch (e) {
        const status = e instanceof CheckSkip ? 'skip' : 'fail';
        const message = e instanceof CheckFailure || e instanceof CheckSkip ? e.message : `${(e as Error).name}: ${(e as Error).message}`;
        result = { id: check.id, title: check.title, status, detail: message };
        // Go on with this connection only if it still answers in step: a
        // server with one client in its life has no other to give.
        if (status === 'fail') await session.resync();
      }
      results.push(result);
      options.onResult?.(result);
    }
  } finally {
    session.close();
  }
  return results;
}
