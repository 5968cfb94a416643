/** Per-command counts and reply latency percentiles for `muser trace --stats`. */
import type { TraceEvent } from './decode.js';

/** One command's numbers. */
export interface CommandStats {
  command: string;
  requests: number;
  replies: number;
  errors: number;
  /** Reply latency percentiles in microseconds (absent without replies). */
  p50Us?: number;
  p90Us?: number;
  p99Us?: number;
  maxUs?: number;
}

/** Collects events; summarises them at the end. */
export class TraceStats {
  private readonly byCommand = new Map<string, { requests: number; replies: number; errors: number; latencies: number[] }>();

  add(e: TraceEvent): void {
    let s = this.byCommand.get(e.command);
    if (!s) this.byCommand.set(e.command, (s = { requests: 0, replies: 0, errors: 0, latencies: [] }));
    if (e.type === 'request') s.requests++;
    else {
      s.replies++;
      if (e.errno !== undefined) s.errors++;
      if (e.latencyUs !== undefined) s.latencies.push(e.latencyUs);
    }
  }

  /** One entry per command seen, busiest first. */
  summary(): CommandStats[] {
    return [...this.byCommand.entries()]
      .map(([command, s]) => {
        const sorted = [...s.latencies].sort((a, b) => a - b);
        const out: CommandStats = { command, requests: s.requests, replies: s.replies, errors: s.errors };
        if (sorted.length > 0) {
          out.p50Us = percentile(sorted, 0.5);
          out.p90Us = percentile(sorted, 0.9);
          out.p99Us = percentile(sorted, 0.99);
          out.maxUs = sorted[sorted.length - 1];
        }
        return out;
      })
      .sort((a, b) => b.requests - a.requests || a.command.localeCompare(b.command));
  }

  /** The summary as an aligned table. */
  format(): string {
    const rows = this.summary();
    const head = `${'command'.padEnd(26)}${'requests'.padStart(9)}${'replies'.padStart(9)}${'errors'.padStart(8)}${'p50 us'.padStart(9)}${'p90 us'.padStart(9)}${'p99 us'.padStart(9)}${'max us'.padStart(9)}`;
    const num = (n: number | undefined): string => (n === undefined ? '-' : String(n)).padStart(9);
    return [head, ...rows.map((r) => `${r.command.padEnd(26)}${num(r.requests)}${num(r.replies)}${String(r.errors).padStart(8)}${num(r.p50Us)}${num(r.p90Us)}${num(r.p99Us)}${num(r.maxUs)}`)].join('\n') + '\n';
  }
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}
