/**
 * The NVM command set (NVMe 1.4, 6): Read, Write, Flush, Write Zeroes and
 * Dataset Management over a namespace's block device. Every field is checked
 * before the backend sees the command; block-layer failures map to NVMe
 * status codes here, in one place.
 */
import { BlockError } from '../block/backend.js';
import type { MaybePromise } from '../device/spec.js';
import type { QueueMemory } from '../device/queue-memory.js';
import type { SpanCache } from '../device/span-cache.js';
import { CommandError, type CommandResult } from './command.js';
import { IoOpcode, Status } from './constants.js';
import type { Namespace } from './namespace.js';
import { copyFromGuest, PrpWalk, walkPrps, withGuestBuffers, type GuestRange } from './prp.js';

/** What the I/O path needs from its controller. */
export interface IoContext {
  readonly memory: QueueMemory;
  /** Largest Read/Write transfer in bytes (MDTS). */
  readonly maxTransfer: number;
  namespace(nsid: number): Namespace | undefined;
  /** The volatile write cache is enabled (Flush has work to do). */
  readonly writeCacheEnabled: boolean;
  /** Counts a finished read or write for the SMART log. */
  account(write: boolean, bytes: number): void;
  /** Bumped by every reset: a command started before the latest one was abandoned. */
  readonly epoch: number;
}

const NSID_ALL = 0xffffffff;
const FUA = 1 << 30;
const DEAC = 1 << 25;
const DSM_DEALLOCATE = 1 << 2;
const DSM_RANGE = 16;
const DSM_MAX_RANGES = 256;

/**
 * Executes one I/O command. It finishes at once (returning its result, no
 * Promise) when the command's guest memory has views and the backend
 * finishes at once, which is the usual Read, Write and Flush; otherwise it
 * returns a Promise from the step that must wait (a PRP list page to copy,
 * a bounce buffer, a backend that must wait, Write Zeroes and Dataset
 * Management). A status other than success is a {@link CommandError},
 * thrown at once or rejected later. `cmd` is read only during this call
 * (the fetch loop reuses one scratch decode for every command). `spans`:
 * the fetch loop's region cache, for a call made within its synchronous
 * loop only.
 */
export function executeIo(cmd: IoCommand, ctx: IoContext, spans?: SpanCache): MaybePromise<CommandResult> {
  if (cmd.fuse !== 0) throw new CommandError(Status.INVALID_FIELD, 'fused operations are not supported');
  switch (cmd.opcode) {
    case IoOpcode.READ:
    case IoOpcode.WRITE:
      return readWrite(cmd, ctx, cmd.opcode === IoOpcode.WRITE, spans);
    case IoOpcode.FLUSH:
      return flushFrom(flushTargets(cmd, ctx), 0);
    case IoOpcode.WRITE_ZEROES:
      return writeZeroes(cmd, ctx);
    case IoOpcode.DATASET_MANAGEMENT:
      return datasetManagement(cmd, ctx);
    default:
      throw new CommandError(Status.INVALID_OPCODE, `I/O opcode 0x${cmd.opcode.toString(16)}`);
  }
}

/** The result of every I/O command that succeeds (no Dword 0): shared, so finishing at once allocates nothing. */
const DONE: CommandResult = Object.freeze({});

/**
 * The fields of a command the I/O checks read; a parsed command has them,
 * and so does the fetch loop's scratch decode.
 */
export interface IoFields {
  readonly opcode: number;
  readonly fuse: number;
  readonly psdt: number;
  readonly nsid: number;
  readonly cdw10: number;
  readonly cdw11: number;
  readonly cdw12: number;
}

/** An I/O command: PRPs as read (bigint) or as numbers (values beyond 2^53 fail their walk as unmapped). */
export interface IoCommand extends IoFields {
  readonly prp1: number | bigint;
  readonly prp2: number | bigint;
}

function namespaceOf(cmd: IoFields, ctx: IoContext): Namespace {
  const ns = ctx.namespace(cmd.nsid);
  if (!ns) throw new CommandError(Status.INVALID_NAMESPACE, `namespace ${cmd.nsid} does not exist`);
  return ns;
}

function checkPrps(cmd: IoFields): void {
  if (cmd.psdt !== 0) throw new CommandError(Status.INVALID_FIELD, 'SGLs are not supported');
}

/** Starting LBA (CDW10-11) and block count (CDW12 bits 15:0, 0-based), checked against the namespace. */
function lbaRange(cmd: IoFields, ns: Namespace): { offset: number; length: number; blocks: number } {
  // Above 2^53 the sum is inexact but still beyond any namespace, so the check holds.
  const slba = cmd.cdw11 * 0x1_0000_0000 + cmd.cdw10;
  const blocks = (cmd.cdw12 & 0xffff) + 1;
  if (slba + blocks > ns.blocks) throw new CommandError(Status.LBA_OUT_OF_RANGE, `LBAs ${slba}+${blocks} beyond ${ns.blocks}`);
  return { offset: slba * ns.lbaSize, length: blocks * ns.lbaSize, blocks };
}

function checkWritable(ns: Namespace): void {
  if (ns.readOnly) throw new CommandError(Status.NAMESPACE_WRITE_PROTECTED, `namespace ${ns.id} is write protected`);
}

/** A Read or Write whose fields passed every check. */
interface Transfer {
  readonly ns: Namespace;
  readonly offset: number;
  readonly length: number;
  readonly write: boolean;
  readonly fua: boolean;
  /** The controller's epoch when the command started. */
  readonly epoch: number;
}

/**
 * A Read or Write: at once when the PRP walk reads its lists through views,
 * the data has views and the backend finishes at once; else from the step
 * that must wait. The checks before the data pointers come in the order
 * the spec's statuses take precedence here.
 */
function readWrite(cmd: IoCommand, ctx: IoContext, write: boolean, spans: SpanCache | undefined): MaybePromise<CommandResult> {
  const ns = namespaceOf(cmd, ctx);
  checkPrps(cmd);
  const { offset, length } = lbaRange(cmd, ns);
  if (length > ctx.maxTransfer) throw new CommandError(Status.INVALID_FIELD, `transfer of ${length} bytes exceeds MDTS (${ctx.maxTransfer})`);
  if (write) checkWritable(ns);
  // With the volatile write cache turned off (Set Features), every write is durable before it completes.
  const fua = (cmd.cdw12 & FUA) !== 0 || (write && ns.capabilities.flush && !ctx.writeCacheEnabled);
  // A Read writes guest memory; a Write reads it.
  const walk = new PrpWalk(ctx.memory, cmd.prp1, cmd.prp2, length, !write, true, spans);
  const listCopied = walk.finish();
  // A list page had to be copied: the views taken meanwhile may be stale, take the ranges afresh.
  if (listCopied) {
    const t = transferOf(ns, offset, length, write, fua, ctx);
    return listCopied.then(() => transfer(t, walk.ranges, ctx));
  }
  const views = walk.views;
  // The memory has no views: a bounce buffer.
  if (!views) return transfer(transferOf(ns, offset, length, write, fua, ctx), walk.ranges, ctx);
  let started: MaybePromise<void>;
  try {
    started = write ? (fua ? ns.disk.write(offset, views, FUA_WRITE) : ns.disk.write(offset, views)) : ns.disk.read(offset, views);
  } catch (e) {
    throw failure(e, write);
  }
  if (!(started instanceof Promise)) {
    ctx.account(write, length);
    return DONE;
  }
  // The backend must wait: it holds the views, pinned from this same turn until it settles.
  return transfer(transferOf(ns, offset, length, write, fua, ctx), walk.ranges, ctx, views, started);
}

/** The record of a checked Read or Write for its asynchronous steps (made only for them: nothing is allocated when it finishes at once). */
function transferOf(ns: Namespace, offset: number, length: number, write: boolean, fua: boolean, ctx: IoContext): Transfer {
  return { ns, offset, length, write, fua, epoch: ctx.epoch };
}

/** The option of a write that must be durable before it completes (shared: no allocation per command). */
const FUA_WRITE = Object.freeze({ fua: true });

/**
 * Moves a checked transfer's data between the backend and the guest ranges,
 * asynchronously; `views`: the ranges' views, taken in this same turn;
 * `started`: the backend request already running on them.
 */
async function transfer(t: Transfer, ranges: readonly GuestRange[], ctx: IoContext, views?: Uint8Array[], started?: Promise<void>): Promise<CommandResult> {
  const { ns, offset, write, fua } = t;
  const io = (buffers: Uint8Array[]): Promise<void> => backendCall(() => started ?? (write ? ns.disk.write(offset, buffers, { fua }) : ns.disk.read(offset, buffers)), write);
  // A Read a reset abandoned does not copy its bounce buffer into guest memory.
  await withGuestBuffers(ctx.memory, ranges, !write, io, views, () => ctx.epoch !== t.epoch);
  ctx.account(write, t.length);
  return DONE;
}

function flushTargets(cmd: IoFields, ctx: IoContext): Namespace[] {
  const targets: Namespace[] = [];
  if (cmd.nsid === NSID_ALL) {
    for (let id = 1; ctx.namespace(id); id++) targets.push(ctx.namespace(id)!);
  } else {
    targets.push(namespaceOf(cmd, ctx));
  }
  return targets;
}

/** Flushes `targets` from `from` on: at once while each backend finishes at once, then on settlement. */
function flushFrom(targets: readonly Namespace[], from: number): MaybePromise<CommandResult> {
  for (let i = from; i < targets.length; i++) {
    const ns = targets[i];
    if (!ns.capabilities.flush) continue;
    let started: MaybePromise<void>;
    try {
      started = ns.disk.flush();
    } catch (e) {
      throw failure(e, true);
    }
    // The namespaces flushed already stay flushed: the rest wait.
    if (started instanceof Promise) return backendCall(() => started, true).then(() => flushFrom(targets, i + 1));
  }
  return DONE;
}

async function writeZeroes(cmd: IoCommand, ctx: IoContext): Promise<CommandResult> {
  const ns = namespaceOf(cmd, ctx);
  const { offset, length } = lbaRange(cmd, ns);
  checkWritable(ns);
  const unmap = (cmd.cdw12 & DEAC) !== 0 && ns.capabilities.discard;
  if (ns.capabilities.writeZeroes) {
    await backendCall(() => ns.disk.writeZeroes(offset, length, { unmap }), true);
  } else {
    // Backends without write-zeroes get zero buffers, a bounded chunk at a time.
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let at = 0; at < length; at += chunk.length) {
      const n = Math.min(chunk.length, length - at);
      await backendCall(() => ns.disk.write(offset + at, [chunk.subarray(0, n)]), true);
    }
  }
  return DONE;
}

async function datasetManagement(cmd: IoCommand, ctx: IoContext): Promise<CommandResult> {
  // Every field is read before the first wait: `cmd` may be a scratch decode that moves on.
  const deallocate = (cmd.cdw11 & DSM_DEALLOCATE) !== 0;
  const ns = namespaceOf(cmd, ctx);
  checkPrps(cmd);
  const count = (cmd.cdw10 & 0xff) + 1;
  if (count > DSM_MAX_RANGES) throw new CommandError(Status.INVALID_FIELD, 'too many ranges');
  const ranges = await walkPrps(ctx.memory, cmd.prp1, cmd.prp2, count * DSM_RANGE, false);
  const list = await copyFromGuest(ctx.memory, ranges);
  const view = new DataView(list.buffer, list.byteOffset, list.byteLength);
  const parsed: { offset: number; length: number }[] = [];
  for (let i = 0; i < count; i++) {
    const blocks = view.getUint32(i * DSM_RANGE + 4, true);
    const slba = view.getBigUint64(i * DSM_RANGE + 8, true);
    if (slba + BigInt(blocks) > BigInt(ns.blocks)) throw new CommandError(Status.LBA_OUT_OF_RANGE, `range ${i}: LBAs ${slba}+${blocks} beyond ${ns.blocks}`);
    if (blocks > 0) parsed.push({ offset: Number(slba) * ns.lbaSize, length: blocks * ns.lbaSize });
  }
  // Only deallocation has an effect; the access hints (IDR, IDW) are advisory.
  if (!deallocate) return DONE;
  checkWritable(ns);
  if (!ns.capabilities.discard) return DONE;
  for (const r of parsed) await backendCall(() => ns.disk.discard(r.offset, r.length), true);
  return DONE;
}

/** Runs a backend call, mapping block-layer errors to NVMe status codes. */
async function backendCall(call: () => MaybePromise<void>, write: boolean): Promise<void> {
  try {
    await call();
  } catch (e) {
    throw failure(e, write);
  }
}

/** The CommandError a failed backend call completes with. */
function failure(e: unknown, write: boolean): CommandError {
  if (e instanceof CommandError) return e;
  if (e instanceof BlockError) {
    switch (e.code) {
      case 'EROFS':
        return new CommandError(Status.NAMESPACE_WRITE_PROTECTED, e.message);
      case 'ERANGE':
        return new CommandError(Status.LBA_OUT_OF_RANGE, e.message);
      case 'ENOTSUP':
        return new CommandError(Status.INVALID_FIELD, e.message);
      case 'ENOSPC':
        return new CommandError(Status.CAPACITY_EXCEEDED, e.message);
      default:
        break;
    }
  }
  return new CommandError(write ? Status.WRITE_FAULT : Status.UNRECOVERED_READ_ERROR, (e as Error).message);
}
