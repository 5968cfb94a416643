/**
 * The controller state that live migration moves (plain JSON): registers,
 * features, every queue with its head, tail and phase, shadow doorbell
 * buffers, completions still waiting for room, held Asynchronous Event
 * Requests, pending events, the error log and the health counters. A
 * loaded state is checked field by field before the controller uses it.
 */
import type { FeatureValues } from './config.js';
import type { ErrorEntry, HealthCounters } from './identify.js';

/** One saved completion queue. */
export interface SavedCq {
  id: number;
  base: number;
  size: number;
  head: number;
  tail: number;
  phase: number;
  interruptsEnabled: boolean;
  vector: number;
}

/** One saved submission queue. */
export interface SavedSq {
  id: number;
  base: number;
  size: number;
  head: number;
  tail: number;
  cqid: number;
  outstanding: number;
}

/** The saved controller (see {@link NvmeController.save}). */
export interface ControllerState {
  cc: number;
  csts: number;
  aqa: number;
  /** 64-bit registers as decimal strings. */
  asq: string;
  acq: string;
  intms: number;
  features: FeatureValues;
  dbbuf: { doorbells: number; eventIdx: number } | null;
  cqs: SavedCq[];
  sqs: SavedSq[];
  pending: { cqid: number; sqid: number; cid: number; status: number; dw0: number }[];
  aers: { sqid: number; cid: number }[];
  events: { type: number; info: number; log: number }[];
  maskedEventTypes: number[];
  errors: ErrorEntry[];
  health: HealthCounters;
}

/** Throws unless `v` is an integer in [min, max]. */
export function checkInt(v: unknown, min: number, max: number, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw new Error(`nvme state: ${what} is ${String(v)}, not an integer in ${min}..${max}`);
  return v;
}

/** Throws unless `v` is a non-null object. */
export function checkObject(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`nvme state: ${what} is not an object`);
  return v as Record<string, unknown>;
}

/** Throws unless `v` is an array. */
export function checkArray(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`nvme state: ${what} is not an array`);
  return v;
}
