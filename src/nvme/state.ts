/**
 * The controller state that live migration moves (plain JSON): registers,
 * features, every queue with its head, tail and phase, shadow doorbell
 * buffers, completions still waiting for room, held Asynchronous Event
 * Requests, pending events, the error log and the health counters. A
 * loaded state is checked field by field before the controller uses it.
 */
import { Csts } from './constants.js';
import type { ControllerCore } from './core.js';
import { AER_LIMIT, ERROR_LOG_ENTRIES, MAX_PENDING_EVENTS, type AsyncEvents } from './events.js';
import type { ErrorEntry, HealthCounters } from './identify.js';
import { CompletionQueue, SubmissionQueue, type SavedCq, type SavedSq } from './queues.js';

export type { SavedCq, SavedSq };
import { defaultFeatures, type FeatureValues } from './types.js';


/** The saved controller (see NvmeController.save). */
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

/** What migration reads and loads: the controller's shared state and its events. */
type Migrating = ControllerCore & { readonly events: AsyncEvents };

/** The controller registers as saved state holds them (64-bit addresses as decimal strings), from the live BAR0 or the in-flight log. */
export function savedRegisters(regs: { cc: number; csts: number; aqa: number; asq: bigint; acq: bigint; intms: number }): Pick<ControllerState, 'cc' | 'csts' | 'aqa' | 'asq' | 'acq' | 'intms'> {
  return { cc: regs.cc, csts: regs.csts, aqa: regs.aqa, asq: regs.asq.toString(), acq: regs.acq.toString(), intms: regs.intms };
}

/** A completion queue as saved state holds it. */
export function savedCq(q: CompletionQueue): SavedCq {
  return { id: q.id, base: q.base, size: q.size, head: q.head, tail: q.tail, phase: q.phase, interruptsEnabled: q.interruptsEnabled, vector: q.vector };
}

/** A submission queue as saved state holds it. */
export function savedSq(q: SubmissionQueue): SavedSq {
  return { id: q.id, base: q.base, size: q.size, head: q.head, tail: q.tail, cqid: q.cq.id, outstanding: q.outstanding };
}

/** The completions waiting for room in `cqs`, as saved state holds them. */
export function savedPending(cqs: Iterable<CompletionQueue>): ControllerState['pending'] {
  const pending: ControllerState['pending'] = [];
  for (const cq of cqs) for (const p of cq.pending) pending.push({ cqid: cq.id, sqid: p.sq.id, cid: p.cid, status: p.status, dw0: p.dw0 });
  return pending;
}

/** The state that migrates; take it while quiesced. */
export function saveController(c: Migrating): ControllerState {
  const pending = savedPending(c.cqs.values());
  const { regs, events } = c;
  return {
    ...savedRegisters(regs),
    features: { ...c.features },
    dbbuf: c.shadow.buffers ? { ...c.shadow.buffers } : null,
    cqs: [...c.cqs.values()].map(savedCq),
    sqs: [...c.sqs.values()].map(savedSq),
    pending,
    aers: events.aers.map((a) => ({ sqid: a.sq.id, cid: a.cid })),
    events: events.events.map((e) => ({ ...e })),
    maskedEventTypes: [...events.maskedEventTypes],
    errors: events.errors.map((e) => ({ ...e })),
    health: { ...c.health },
  };
}

/** Loads a checked saved state into a controller just reset; throws at the first field that is wrong. */
export function loadController(c: Migrating, s: Record<string, unknown>): void {
  const u32 = (v: unknown, what: string): number => checkInt(v, 0, 0xffffffff, what);
  const addr = (v: unknown, what: string): number => checkInt(v, 0, Number.MAX_SAFE_INTEGER, what);
  const big = (v: unknown, what: string): bigint => {
    if (typeof v !== 'string' || !/^\d{1,20}$/.test(v) || BigInt(v) >= 1n << 64n) throw new Error(`nvme state: ${what} is not a 64-bit value`);
    return BigInt(v);
  };
  const { regs, events } = c;
  regs.cc = u32(s.cc, 'cc');
  regs.csts = u32(s.csts, 'csts') & 0xf;
  regs.aqa = u32(s.aqa, 'aqa');
  regs.asq = big(s.asq, 'asq');
  regs.acq = big(s.acq, 'acq');
  regs.intms = u32(s.intms, 'intms');
  const f = checkObject(s.features, 'features');
  const fv = defaultFeatures(c.volatileWriteCache);
  for (const key of Object.keys(fv) as (keyof FeatureValues)[]) {
    if (key === 'queuesAllocated') fv.queuesAllocated = f.queuesAllocated === true;
    else fv[key] = u32(f[key], `features.${key}`);
  }
  c.features = fv;
  if (s.dbbuf !== null) {
    if (!c.config.shadowDoorbells) throw new Error('nvme state: shadow doorbells are not offered here');
    const d = checkObject(s.dbbuf, 'dbbuf');
    c.shadow.buffers = { doorbells: addr(d.doorbells, 'dbbuf.doorbells'), eventIdx: addr(d.eventIdx, 'dbbuf.eventIdx') };
  }
  const maxQid = c.config.ioQueues;
  const maxEntries = 4096;
  for (const [i, raw] of checkArray(s.cqs, 'cqs').entries()) {
    const q = checkObject(raw, `cqs[${i}]`);
    const id = checkInt(q.id, 0, maxQid, `cqs[${i}].id`);
    const size = checkInt(q.size, 2, maxEntries, `cqs[${i}].size`);
    if (c.cqs.has(id)) throw new Error(`nvme state: CQ ${id} twice`);
    const cq = new CompletionQueue(id, addr(q.base, `cqs[${i}].base`), size, q.interruptsEnabled === true, checkInt(q.vector, 0, 2047, `cqs[${i}].vector`));
    cq.head = checkInt(q.head, 0, size - 1, `cqs[${i}].head`);
    cq.tail = checkInt(q.tail, 0, size - 1, `cqs[${i}].tail`);
    cq.phase = checkInt(q.phase, 0, 1, `cqs[${i}].phase`);
    cq.shadow = c.shadow.slots(id, true);
    c.cqs.set(id, cq);
  }
  for (const [i, raw] of checkArray(s.sqs, 'sqs').entries()) {
    const q = checkObject(raw, `sqs[${i}]`);
    const id = checkInt(q.id, 0, maxQid, `sqs[${i}].id`);
    const size = checkInt(q.size, 2, maxEntries, `sqs[${i}].size`);
    const cq = c.cqs.get(checkInt(q.cqid, 0, maxQid, `sqs[${i}].cqid`));
    if (!cq || (id === 0) !== (cq.id === 0) || c.sqs.has(id)) throw new Error(`nvme state: SQ ${id} has no valid completion queue`);
    const sq = new SubmissionQueue(id, addr(q.base, `sqs[${i}].base`), size, cq);
    sq.head = checkInt(q.head, 0, size - 1, `sqs[${i}].head`);
    sq.tail = checkInt(q.tail, 0, size - 1, `sqs[${i}].tail`);
    sq.outstanding = checkInt(q.outstanding, 0, size, `sqs[${i}].outstanding`);
    sq.shadow = c.shadow.slots(id, false);
    cq.sqs.add(sq);
    c.sqs.set(id, sq);
  }
  if (regs.csts & Csts.RDY && (!c.sqs.has(0) || !c.cqs.has(0))) throw new Error('nvme state: ready without an admin queue');
  for (const [i, raw] of checkArray(s.pending, 'pending').entries()) {
    const p = checkObject(raw, `pending[${i}]`);
    const sq = c.sqs.get(checkInt(p.sqid, 0, maxQid, `pending[${i}].sqid`));
    const cq = c.cqs.get(checkInt(p.cqid, 0, maxQid, `pending[${i}].cqid`));
    if (!sq || sq.cq !== cq) throw new Error(`nvme state: pending completion ${i} names no queue pair`);
    cq.pending.push({ sq, cid: checkInt(p.cid, 0, 0xffff, 'cid'), status: checkInt(p.status, 0, 0x7fff, 'status'), dw0: u32(p.dw0, 'dw0'), slot: -1 });
  }
  const admin = c.sqs.get(0);
  for (const [i, raw] of checkArray(s.aers, 'aers').entries()) {
    const a = checkObject(raw, `aers[${i}]`);
    if (!admin || a.sqid !== 0 || events.aers.length >= AER_LIMIT) throw new Error(`nvme state: AER ${i} does not fit`);
    events.aers.push({ sq: admin, cid: checkInt(a.cid, 0, 0xffff, `aers[${i}].cid`), slot: -1 });
  }
  for (const [i, raw] of checkArray(s.events, 'events').slice(0, MAX_PENDING_EVENTS).entries()) {
    const e = checkObject(raw, `events[${i}]`);
    events.events.push({ type: checkInt(e.type, 0, 7, 'type'), info: checkInt(e.info, 0, 255, 'info'), log: checkInt(e.log, 0, 255, 'log') });
  }
  for (const t of checkArray(s.maskedEventTypes, 'maskedEventTypes')) events.maskedEventTypes.add(checkInt(t, 0, 7, 'masked event type'));
  for (const [i, raw] of checkArray(s.errors, 'errors').slice(-ERROR_LOG_ENTRIES).entries()) {
    const e = checkObject(raw, `errors[${i}]`);
    events.errors.push({ count: addr(e.count, 'count'), sqid: checkInt(e.sqid, 0, 0xffff, 'sqid'), cid: checkInt(e.cid, 0, 0xffff, 'cid'), status: checkInt(e.status, 0, 0x7fff, 'status'), nsid: u32(e.nsid, 'nsid') });
  }
  const h = checkObject(s.health, 'health');
  for (const key of Object.keys(c.health) as (keyof HealthCounters)[]) c.health[key] = checkInt(h[key], 0, Number.MAX_SAFE_INTEGER, `health.${key}`);
}
