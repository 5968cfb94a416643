/**
 * Doorbells by message against doorbells stored into a mapped page that
 * muser watches (`--mmap-doorbells`), both servers under `--poll`: the rows
 * that bench/nvme.ts and bench/blk.ts add, their shared shape and how they
 * are printed. Each round runs the two variants back to back (their order
 * alternating), so both see the same machine; the server's CPU is measured
 * over each run.
 */
import type { Json } from './proc.js';
import { median, medianFields, num } from './proc.js';

/** One variant's figures: IOPS, latency, the server's CPU (1.0 = a whole CPU) and doorbells per command. */
export interface DoorbellFig {
  iops: number;
  p50: number;
  p99: number;
  cpu: number;
  /** Doorbell messages (or stores into the page) per command, as the driver counted them. */
  perOp: number;
}

/** One workload, both variants. */
export interface DoorbellRow {
  label: string;
  messages: DoorbellFig;
  mapped: DoorbellFig;
  /** Medians of per-round mapped / messages ratios. */
  iopsRatio: number;
  cpuRatio: number;
  load: number;
}

/** A round's pair. */
export interface DoorbellRound {
  load: number;
  messages: DoorbellFig;
  mapped: DoorbellFig;
}

/** A driver's JSON and the server's CPU over it, as a figure (`perOpKey`: the driver's doorbell count field). */
export function doorbellFig(r: { json: Json; cpu: number }, perOpKey: string): DoorbellFig {
  return { iops: num(r.json, 'iops'), p50: num(r.json, 'p50_us'), p99: num(r.json, 'p99_us'), cpu: r.cpu, perOp: num(r.json, perOpKey) };
}

/** The medians of a workload's rounds. */
export function doorbellRow(label: string, rounds: DoorbellRound[]): DoorbellRow {
  return {
    label,
    messages: medianFields(rounds.map((x) => x.messages)),
    mapped: medianFields(rounds.map((x) => x.mapped)),
    iopsRatio: median(rounds.map((x) => x.mapped.iops / x.messages.iops)),
    cpuRatio: median(rounds.map((x) => x.mapped.cpu / x.messages.cpu)),
    load: median(rounds.map((x) => x.load)),
  };
}

/** Table rows: workload, each variant's IOPS, latency, server CPU and doorbells per command, the ratios. */
export function doorbellTable(rows: DoorbellRow[], si: (n: number) => string): { head: string[]; rows: string[][] } {
  const f = (x: DoorbellFig): string => `${si(x.iops)}  ${x.p50.toFixed(1)} / ${x.p99.toFixed(1)}  cpu ${(x.cpu * 100).toFixed(0)}%  ${x.perOp.toFixed(3)}`;
  return {
    head: ['workload', 'by message: IOPS  p50 / p99  server cpu  db/cmd', 'mapped page: IOPS  p50 / p99  server cpu  stores/cmd', 'IOPS mapped/msg', 'cpu mapped/msg', 'load'],
    rows: rows.map((r) => [r.label, f(r.messages), f(r.mapped), r.iopsRatio.toFixed(2), r.cpuRatio.toFixed(2), r.load.toFixed(1)]),
  };
}
