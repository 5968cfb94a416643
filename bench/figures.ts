/**
 * What the bench's parts measure and judge: a figure (a rate and its
 * latency percentiles) and a target it is held to.
 */
import { num, type Json } from './proc.js';

/** One measured figure: a rate and its latency percentiles. */
export interface Fig {
  ops: number;
  p50: number;
  p99: number;
}

export interface Target {
  /** Minimum ratio to the floor, or minimum absolute rate. */
  kind: 'ratio' | 'abs';
  min: number;
  text: string;
}

/** A target with the value measured against it. */
export type Judged = Target & { value: number; pass: boolean };

/** Scales an iteration count (BENCH_SCALE), as the argument string the C programs take. */
export type Iterations = (n: number) => string;

/** The figure in a C program's JSON line, its rate under `rate`. */
export const fig = (j: Json, rate = 'ops_per_s'): Fig => ({ ops: num(j, rate), p50: num(j, 'p50_us'), p99: num(j, 'p99_us') });
