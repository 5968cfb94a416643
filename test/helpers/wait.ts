/** Waiting in tests: a bounded poll for a condition, and a plain delay. */

/** Resolves once `cond()` holds, polling every 10 ms; throws naming `what` after `timeoutMs`. */
export async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolves after `ms`: for pacing and for checking that something does not happen, never to wait for a condition. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
