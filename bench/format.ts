/**
 * How the bench prints its figures: SI rates, microseconds, MiB, aligned
 * tables and target verdicts.
 */

/** A rate with an SI prefix (k, M, G), three significant digits or so; '-' when not finite. */
export function si(x: number): string {
  if (!Number.isFinite(x)) return '-';
  const [d, s] = x >= 1e9 ? [1e9, 'G'] : x >= 1e6 ? [1e6, 'M'] : x >= 1e3 ? [1e3, 'k'] : [1, ''];
  const v = x / d;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)}${s ? ' ' + s : ''}`;
}

/** Microseconds. */
export const us = (x: number): string => (x >= 100 ? x.toFixed(0) : x.toFixed(1));

/** Latency percentiles, `p50 / p99` in us. */
export const lat = (f: { p50: number; p99: number }): string => `${us(f.p50)} / ${us(f.p99)}`;

/** KiB as MiB. */
export const mib = (kb: number): string => `${(kb / 1024).toFixed(2)} MiB`;

/** A table: the first column left-aligned, the others right-aligned, a rule under the head. */
export function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

/** A target's text and PASS / MISS; empty without a target. */
export const verdict = (t?: { text: string; pass: boolean }): string => (t ? `${t.text}  ${t.pass ? 'PASS' : 'MISS'}` : '');
