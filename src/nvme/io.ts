/**
 * The NVM command set (NVMe 1.4, 6): Read, Write, Flush, Write Zeroes and
 * Dataset Management over a namespace's block device. Every field is checked
 * before the backend sees the command; block-layer failures map to NVMe
 * status codes here, in one place.
 */
import { BlockError } from '../block/backend.js';
import type { QueueMemory } from '../device/queue-memory.js';
import { CommandError, type CommandResult, type NvmeCommand } from './command.js';
import { IoOpcode, Status } from './constants.js';
import type { Namespace } from './namespace.js';
import { copyFromGuest, walkPrps, withGuestBuffers } from './prp.js';

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
}

const NSID_ALL = 0xffffffff;
const FUA = 1 << 30;
const DEAC = 1 << 25;
const DSM_DEALLOCATE = 1 << 2;
const DSM_RANGE = 16;
const DSM_MAX_RANGES = 256;

/** Executes one I/O command; throws {@link CommandError} for a status other than success. */
export async function executeIo(cmd: NvmeCommand, ctx: IoContext): Promise<CommandResult> {
  if (cmd.fuse !== 0) throw new CommandError(Status.INVALID_FIELD, 'fused operations are not supported');
  switch (cmd.opcode) {
    case IoOpcode.READ:
    case IoOpcode.WRITE:
      return readWrite(cmd, ctx, cmd.opcode === IoOpcode.WRITE);
    case IoOpcode.FLUSH:
      return flush(cmd, ctx);
    case IoOpcode.WRITE_ZEROES:
      return writeZeroes(cmd, ctx);
    case IoOpcode.DATASET_MANAGEMENT:
      return datasetManagement(cmd, ctx);
    default:
      throw new CommandError(Status.INVALID_OPCODE, `I/O opcode 0x${cmd.opcode.toString(16)}`);
  }
}

function namespaceOf(cmd: NvmeCommand, ctx: IoContext): Namespace {
  const ns = ctx.namespace(cmd.nsid);
  if (!ns) throw new CommandError(Status.INVALID_NAMESPACE, `namespace ${cmd.nsid} does not exist`);
  return ns;
}

function checkPrps(cmd: NvmeCommand): void {
  if (cmd.psdt !== 0) throw new CommandError(Status.INVALID_FIELD, 'SGLs are not supported');
}

/** Starting LBA (CDW10-11) and block count (CDW12 bits 15:0, 0-based), checked against the namespace. */
function lbaRange(cmd: NvmeCommand, ns: Namespace): { offset: number; length: number; blocks: number } {
  const slba = (BigInt(cmd.cdw11) << 32n) | BigInt(cmd.cdw10);
  const blocks = (cmd.cdw12 & 0xffff) + 1;
  if (slba + BigInt(blocks) > BigInt(ns.blocks)) throw new CommandError(Status.LBA_OUT_OF_RANGE, `LBAs ${slba}+${blocks} beyond ${ns.blocks}`);
  return { offset: Number(slba) * ns.lbaSize, length: blocks * ns.lbaSize, blocks };
}

function checkWritable(ns: Namespace): void {
  if (ns.readOnly) throw new CommandError(Status.NAMESPACE_WRITE_PROTECTED, `namespace ${ns.id} is write protected`);
}

async function readWrite(cmd: NvmeCommand, ctx: IoContext, write: boolean): Promise<CommandResult> {
  const ns = namespaceOf(cmd, ctx);
  checkPrps(cmd);
  const { offset, length } = lbaRange(cmd, ns);
  if (length > ctx.maxTransfer) throw new CommandError(Status.INVALID_FIELD, `transfer of ${length} bytes exceeds MDTS (${ctx.maxTransfer})`);
  if (write) checkWritable(ns);
  // A Read writes guest memory; a Write reads it.
  const ranges = await walkPrps(ctx.memory, cmd.prp1, cmd.prp2, length, !write);
  // With the volatile write cache turned off (Set Features), every write is durable before it completes.
  const fua = (cmd.cdw12 & FUA) !== 0 || (write && ns.capabilities.flush && !ctx.writeCacheEnabled);
  await withGuestBuffers(ctx.memory, ranges, !write, (buffers) => backendCall(() => (write ? ns.disk.write(offset, buffers, { fua }) : ns.disk.read(offset, buffers)), write));
  ctx.account(write, length);
  return {};
}

async function flush(cmd: NvmeCommand, ctx: IoContext): Promise<CommandResult> {
  const targets: Namespace[] = [];
  if (cmd.nsid === NSID_ALL) {
    for (let id = 1; ctx.namespace(id); id++) targets.push(ctx.namespace(id)!);
  } else {
    targets.push(namespaceOf(cmd, ctx));
  }
  for (const ns of targets) if (ns.capabilities.flush) await backendCall(() => ns.disk.flush(), true);
  return {};
}

async function writeZeroes(cmd: NvmeCommand, ctx: IoContext): Promise<CommandResult> {
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
  return {};
}

async function datasetManagement(cmd: NvmeCommand, ctx: IoContext): Promise<CommandResult> {
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
  if ((cmd.cdw11 & DSM_DEALLOCATE) === 0) return {};
  checkWritable(ns);
  if (!ns.capabilities.discard) return {};
  for (const r of parsed) await backendCall(() => ns.disk.discard(r.offset, r.length), true);
  return {};
}

/** Runs a backend call, mapping block-layer errors to NVMe status codes. */
async function backendCall(call: () => Promise<void>, write: boolean): Promise<void> {
  try {
    await call();
  } catch (e) {
    if (e instanceof CommandError) throw e;
    if (e instanceof BlockError) {
      switch (e.code) {
        case 'EROFS':
          throw new CommandError(Status.NAMESPACE_WRITE_PROTECTED, e.message);
        case 'ERANGE':
          throw new CommandError(Status.LBA_OUT_OF_RANGE, e.message);
        case 'ENOTSUP':
          throw new CommandError(Status.INVALID_FIELD, e.message);
        case 'ENOSPC':
          throw new CommandError(Status.CAPACITY_EXCEEDED, e.message);
        default:
          break;
      }
    }
    throw new CommandError(write ? Status.WRITE_FAULT : Status.UNRECOVERED_READ_ERROR, (e as Error).message);
  }
}
