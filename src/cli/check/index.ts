/**
 * `muser check <socket>`: a conformance and robustness checker for any
 * vfio-user server. Prints PASS / FAIL / SKIP per check (or JSON with
 * `--json`); exits 1 when any check failed.
 *
 *   --only a,b       run only checks whose id starts with these (`config`, `hostile.bad-region`)
 *   --timeout ms     how long to wait for the connection and for each reply (default 2000)
 *
 * The first connection is the one the checks share (no probe connection
 * before it: a server may serve one client in its whole life); a socket
 * that cannot be reached is one error, not a FAIL per check.
 */
import { parseArgs } from 'node:util';
import { UsageError } from '../usage.js';
import { runChecks } from './runner.js';
import type { CheckResult } from './types.js';

export { runChecks, ALL_CHECKS, type CheckOptions } from './runner.js';
export type { Check, CheckContext, CheckResult, CheckStatus } from './types.js';

/** Runs the command; resolves to the exit code. */
export async function check(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: { json: { type: 'boolean' }, only: { type: 'string' }, timeout: { type: 'string' }, verbose: { type: 'boolean', short: 'v' } } });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { positionals, values } = parsed;
  if (positionals.length !== 1) throw new UsageError('check needs one socket path');
  const timeoutMs = values.timeout === undefined ? 2000 : Number(values.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new UsageError('--timeout wants milliseconds');
  const json = values.json === true;
  const results = await runChecks(positionals[0], {
    timeoutMs,
    only: values.only?.split(',').map((s) => s.trim()).filter(Boolean),
    onResult: json ? undefined : (r) => process.stdout.write(`${formatResult(r)}\n`),
  });
  const counts = { pass: 0, fail: 0, skip: 0 };
  for (const r of results) counts[r.status]++;
  if (json) process.stdout.write(`${JSON.stringify({ socket: positionals[0], ...counts, results }, null, 2)}\n`);
  else process.stdout.write(`\n${counts.pass} passed, ${counts.fail} failed, ${counts.skip} skipped\n`);
  return counts.fail > 0 || results.length === 0 ? 1 : 0;
}

/** `PASS  config.bar-sizing  BAR sizing ... (BAR0=4096)`. */
export function formatResult(r: CheckResult): string {
  return `${r.status.toUpperCase().padEnd(5)} ${r.id.padEnd(36)} ${r.title}${r.detail ? `\n      ${r.detail}` : ''}`;
}
