/**
 * Admin commands (NVMe 1.4, 5): Identify, queue creation and deletion,
 * Get / Set Features, Get Log Page, Abort, Keep Alive and Doorbell Buffer
 * Config. (Asynchronous Event Requests are held by the controller itself.)
 * Every field is checked and a bad one gets the status the spec names.
 */
import type { QueueMemory } from '../device/queue-memory.js';
import { CommandError, type CommandResult, type NvmeCommand } from './command.js';
import { AdminOpcode, Cc, Cns, FeatureId, LogPageId, PAGE_SIZE, Status } from './constants.js';
import { CQE, SQE } from './layouts.js';
import type { ControllerConfig, FeatureValues } from './types.js';
import {
  activeNamespaceList,
  errorLog,
  firmwareSlotLog,
  identifyController,
  identifyNamespace,
  identifyNamespaceIndependent,
  namespaceDescriptors,
  smartLog,
  type ErrorEntry,
  type HealthCounters,
} from './identify.js';
import type { Namespace } from './namespace.js';
import { copyToGuest, walkPrps } from './prp.js';
import type { CompletionQueue, SubmissionQueue } from './queues.js';

/** What admin commands act on: the controller's queues, features and identity. */
export interface AdminTarget {
  readonly config: ControllerConfig;
  readonly memory: QueueMemory;
  /** Bumped by every reset: a command started before the latest one was abandoned. */
  readonly epoch: number;
  readonly sqs: ReadonlyMap<number, SubmissionQueue>;
  readonly cqs: ReadonlyMap<number, CompletionQueue>;
  features: FeatureValues;
  readonly errors: readonly ErrorEntry[];
  readonly volatileWriteCache: boolean;
  readonly aerLimit: number;
  readonly errorLogEntries: number;
  readonly hasIoQueues: boolean;
  readonly doorbellBufferBytes: number;
  /** CC as last written (for IOSQES / IOCQES). */
  readRegister(offset: number, length: number): Uint8Array;
  host: { msixEnabled(): boolean; msixVectors(): number };
  namespace(nsid: number): Namespace | undefined;
  healthNow(): HealthCounters;
  logRead(log: number, retain: boolean): void;
  addCq(id: number, base: number, size: number, interruptsEnabled: boolean, vector: number): void;
  addSq(id: number, base: number, size: number, cq: CompletionQueue): void;
  removeSq(sq: SubmissionQueue): Promise<void>;
  removeCq(cq: CompletionQueue): void;
  setDoorbellBuffer(doorbells: number, eventIdx: number): Promise<void>;
  /** The worker thread serving I/O queue `qid` (undefined: every queue is served on the main thread). */
  threadOf(qid: number): number | undefined;
}

const NSID_ALL = 0xffffffff;
const VERSION = 0x00010400;

/** Executes one admin command (not Asynchronous Event Request). */
export async function executeAdmin(cmd: NvmeCommand, t: AdminTarget): Promise<CommandResult> {
  if (cmd.fuse !== 0) throw new CommandError(Status.INVALID_FIELD, 'fused operations are not supported');
  if (cmd.psdt !== 0) throw new CommandError(Status.INVALID_FIELD, 'SGLs are not supported');
  switch (cmd.opcode) {
    case AdminOpcode.IDENTIFY:
      return identify(cmd, t);
    case AdminOpcode.CREATE_IO_CQ:
      return createCq(cmd, t);
    case AdminOpcode.CREATE_IO_SQ:
      return createSq(cmd, t);
    case AdminOpcode.DELETE_IO_SQ:
      return deleteSq(cmd, t);
    case AdminOpcode.DELETE_IO_CQ:
      return deleteCq(cmd, t);
    case AdminOpcode.GET_FEATURES:
      return getFeatures(cmd, t);
    case AdminOpcode.SET_FEATURES:
      return setFeatures(cmd, t);
    case AdminOpcode.GET_LOG_PAGE:
      return getLogPage(cmd, t);
    case AdminOpcode.ABORT:
      // Commands run to completion as soon as they are fetched: report "not aborted" (Dword 0 bit 0).
      return { dw0: 1 };
    case AdminOpcode.KEEP_ALIVE:
      return {};
    case AdminOpcode.DOORBELL_BUFFER_CONFIG:
      if (!t.config.shadowDoorbells) throw new CommandError(Status.INVALID_OPCODE, 'Doorbell Buffer Config is not offered');
      return doorbellBufferConfig(cmd, t);
    default:
      throw new CommandError(Status.INVALID_OPCODE, `admin opcode 0x${cmd.opcode.toString(16)}`);
  }
}

async function sendData(cmd: NvmeCommand, t: AdminTarget, data: Uint8Array, length = data.length): Promise<void> {
  const epoch = t.epoch;
  const ranges = await walkPrps(t.memory, cmd.prp1, cmd.prp2, length, true);
  // A command a reset abandoned meanwhile writes nothing.
  if (t.epoch !== epoch) return;
  await copyToGuest(t.memory, ranges, data.length >= length ? data.subarray(0, length) : padded(data, length));
}

function padded(data: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  out.set(data);
  return out;
}

function activeNamespace(nsid: number, t: AdminTarget): Namespace {
  const ns = t.namespace(nsid);
  if (!ns) throw new CommandError(Status.INVALID_NAMESPACE, `namespace ${nsid} does not exist`);
  return ns;
}

async function identify(cmd: NvmeCommand, t: AdminTarget): Promise<CommandResult> {
  const cns = cmd.cdw10 & 0xff;
  const csi = (cmd.cdw11 >>> 24) & 0xff;
  let data: Buffer;
  switch (cns) {
    case Cns.NAMESPACE:
      data = identifyNamespace(activeNamespace(cmd.nsid, t));
      break;
    case Cns.CONTROLLER: {
      const c = t.config;
      data = identifyController({
        vendorId: c.vendorId,
        subsystemVendorId: c.subsystemVendorId,
        serial: c.serial,
        model: c.model,
        firmware: c.firmware,
        mdts: c.mdts,
        controllerId: 1,
        version: VERSION,
        namespaces: c.namespaces.length,
        volatileWriteCache: t.volatileWriteCache,
        dsm: c.namespaces.some((ns) => ns.capabilities.discard),
        aerl: t.aerLimit - 1,
        elpe: t.errorLogEntries - 1,
        maxCommands: 0,
        shadowDoorbells: c.shadowDoorbells,
      });
      break;
    }
    case Cns.ACTIVE_NS_LIST:
      if (cmd.nsid >= 0xfffffffe) throw new CommandError(Status.INVALID_NAMESPACE, `namespace list after ${cmd.nsid}`);
      data = activeNamespaceList(
        t.config.namespaces.map((ns) => ns.id),
        cmd.nsid,
      );
      break;
    case Cns.NS_ID_DESCRIPTORS:
      data = namespaceDescriptors(activeNamespace(cmd.nsid, t));
      break;
    case Cns.CS_NAMESPACE:
      if (csi !== 0) throw new CommandError(Status.INVALID_FIELD, `command set ${csi}`);
      activeNamespace(cmd.nsid, t);
      data = Buffer.alloc(PAGE_SIZE);
      break;
    case Cns.CS_CONTROLLER:
      // The NVM command set's controller data: every limit left at "none".
      if (csi !== 0) throw new CommandError(Status.INVALID_FIELD, `command set ${csi}`);
      data = Buffer.alloc(PAGE_SIZE);
      break;
    case Cns.CS_INDEPENDENT_NAMESPACE:
      data = identifyNamespaceIndependent(activeNamespace(cmd.nsid, t));
      break;
    default:
      throw new CommandError(Status.INVALID_FIELD, `Identify CNS 0x${cns.toString(16)}`);
  }
  await sendData(cmd, t, data);
  return {};
}

/** Checks an I/O queue's id, size and memory; returns the queue's base address and size in entries. */
function queueArgs(cmd: NvmeCommand, t: AdminTarget, existing: ReadonlyMap<number, unknown>, entrySize: number, write: boolean): { qid: number; size: number; base: number } {
  const qid = cmd.cdw10 & 0xffff;
  const size = (cmd.cdw10 >>> 16) + 1;
  if (qid === 0 || qid > t.config.ioQueues) throw new CommandError(Status.INVALID_QUEUE_IDENTIFIER, `queue id ${qid} is outside 1..${t.config.ioQueues}`);
  if (existing.has(qid)) throw new CommandError(Status.INVALID_QUEUE_IDENTIFIER, `queue ${qid} exists`);
  if (size < 2 || size > t.config.maxQueueEntries) throw new CommandError(Status.INVALID_QUEUE_SIZE, `queue size ${size}`);
  if ((cmd.cdw11 & 1) === 0) throw new CommandError(Status.INVALID_FIELD, 'queues must be physically contiguous');
  if (cmd.prp1 & 0xfffn) throw new CommandError(Status.PRP_OFFSET_INVALID, 'queue base is not page aligned');
  if (cmd.prp1 > BigInt(Number.MAX_SAFE_INTEGER)) throw new CommandError(Status.INVALID_FIELD, 'queue base is out of range');
  const base = Number(cmd.prp1);
  if (!t.memory.mapped(base, size * entrySize, write)) throw new CommandError(Status.INVALID_FIELD, `queue memory 0x${base.toString(16)}+${size * entrySize} is not mapped`);
  return { qid, size, base };
}

function ccField(t: AdminTarget, shift: number): number {
  const cc = t.readRegister(0x14, 4);
  return (((cc[0] | (cc[1] << 8) | (cc[2] << 16) | (cc[3] << 24)) >>> 0) >> shift) & 0xf;
}

function createCq(cmd: NvmeCommand, t: AdminTarget): CommandResult {
  if (ccField(t, Cc.IOCQES_SHIFT) !== 4) throw new CommandError(Status.INVALID_FIELD, 'CC.IOCQES is not 16 bytes');
  const { qid, size, base } = queueArgs(cmd, t, t.cqs, CQE.size, true);
  const ien = (cmd.cdw11 & 2) !== 0;
  const vector = cmd.cdw11 >>> 16;
  const vectors = t.host.msixEnabled() ? t.host.msixVectors() : 1;
  if (ien && vector >= vectors) throw new CommandError(Status.INVALID_INTERRUPT_VECTOR, `vector ${vector} of ${vectors}`);
  t.addCq(qid, base, size, ien, vector);
  return {};
}

function createSq(cmd: NvmeCommand, t: AdminTarget): CommandResult {
  if (ccField(t, Cc.IOSQES_SHIFT) !== 6) throw new CommandError(Status.INVALID_FIELD, 'CC.IOSQES is not 64 bytes');
  const cqid = cmd.cdw11 >>> 16;
  const cq = cqid === 0 ? undefined : t.cqs.get(cqid);
  // The queue id is checked first: a bad id and a bad CQ both name the first problem.
  const qid = cmd.cdw10 & 0xffff;
  if (qid === 0 || qid > t.config.ioQueues || t.sqs.has(qid)) throw new CommandError(Status.INVALID_QUEUE_IDENTIFIER, `queue id ${qid}`);
  if (!cq) throw new CommandError(Status.COMPLETION_QUEUE_INVALID, `completion queue ${cqid} does not exist`);
  // On queue threads an SQ is served with its CQ: I/O queue y is on thread (y - 1) mod workers.
  if (t.threadOf(qid) !== t.threadOf(cqid)) throw new CommandError(Status.COMPLETION_QUEUE_INVALID, `completion queue ${cqid} is served by another worker thread than queue ${qid}`);
  const { size, base } = queueArgs(cmd, t, t.sqs, SQE.size, false);
  t.addSq(qid, base, size, cq);
  return {};
}

async function deleteSq(cmd: NvmeCommand, t: AdminTarget): Promise<CommandResult> {
  const qid = cmd.cdw10 & 0xffff;
  const sq = qid === 0 ? undefined : t.sqs.get(qid);
  if (!sq) throw new CommandError(Status.INVALID_QUEUE_IDENTIFIER, `submission queue ${qid}`);
  await t.removeSq(sq);
  return {};
}

function deleteCq(cmd: NvmeCommand, t: AdminTarget): CommandResult {
  const qid = cmd.cdw10 & 0xffff;
  const cq = qid === 0 ? undefined : t.cqs.get(qid);
  if (!cq) throw new CommandError(Status.INVALID_QUEUE_IDENTIFIER, `completion queue ${qid}`);
  if (cq.sqs.size > 0) throw new CommandError(Status.INVALID_QUEUE_DELETION, `completion queue ${qid} still has submission queues`);
  t.removeCq(cq);
  return {};
}

/** Stored values of the simple features, by identifier. */
const STORED: Partial<Record<number, keyof FeatureValues>> = {
  [FeatureId.ARBITRATION]: 'arbitration',
  [FeatureId.POWER_MANAGEMENT]: 'powerManagement',
  [FeatureId.TEMPERATURE_THRESHOLD]: 'temperatureThreshold',
  [FeatureId.ERROR_RECOVERY]: 'errorRecovery',
  [FeatureId.INTERRUPT_COALESCING]: 'interruptCoalescing',
  [FeatureId.WRITE_ATOMICITY]: 'writeAtomicity',
  [FeatureId.ASYNC_EVENT_CONFIG]: 'asyncEventConfig',
  [FeatureId.KEEP_ALIVE_TIMER]: 'keepAlive',
};

function queuesDw0(t: AdminTarget): number {
  const n = t.config.ioQueues - 1;
  return (n << 16) | n;
}

function getFeatures(cmd: NvmeCommand, t: AdminTarget): CommandResult {
  const fid = cmd.cdw10 & 0xff;
  const select = (cmd.cdw10 >> 8) & 7;
  if (select > 3) throw new CommandError(Status.INVALID_FIELD, `select ${select}`);
  if (select === 3) {
    // Supported capabilities: changeable, not saveable, not namespace specific.
    if (!known(fid, t)) throw new CommandError(Status.INVALID_FIELD, `feature 0x${fid.toString(16)}`);
    return { dw0: 1 << 2 };
  }
  const current = select === 0;
  switch (fid) {
    case FeatureId.NUMBER_OF_QUEUES:
      return { dw0: queuesDw0(t) };
    case FeatureId.VOLATILE_WRITE_CACHE:
      if (!t.volatileWriteCache) throw new CommandError(Status.INVALID_FIELD, 'no volatile write cache');
      return { dw0: current ? t.features.writeCache : 1 };
    case FeatureId.INTERRUPT_VECTOR_CONFIG: {
      const vector = cmd.cdw11 & 0xffff;
      const cq = [...t.cqs.values()].find((q) => q.vector === vector);
      return { dw0: vector | (cq && !cq.interruptsEnabled ? 1 << 16 : 0) };
    }
    case FeatureId.TEMPERATURE_THRESHOLD:
      return { dw0: current ? t.features.temperatureThreshold : 0x0157 };
    default: {
      const key = STORED[fid];
      if (!key) throw new CommandError(Status.INVALID_FIELD, `feature 0x${fid.toString(16)}`);
      return { dw0: current ? Number(t.features[key]) : 0 };
    }
  }
}

function known(fid: number, t: AdminTarget): boolean {
  if (fid === FeatureId.VOLATILE_WRITE_CACHE) return t.volatileWriteCache;
  return fid === FeatureId.NUMBER_OF_QUEUES || fid === FeatureId.INTERRUPT_VECTOR_CONFIG || STORED[fid] !== undefined;
}

function setFeatures(cmd: NvmeCommand, t: AdminTarget): CommandResult {
  const fid = cmd.cdw10 & 0xff;
  if (cmd.cdw10 & (1 << 31)) throw new CommandError(Status.FEATURE_NOT_SAVEABLE, 'features are not saveable');
  switch (fid) {
    case FeatureId.NUMBER_OF_QUEUES: {
      const nsqr = cmd.cdw11 & 0xffff;
      const ncqr = cmd.cdw11 >>> 16;
      if (nsqr === 0xffff || ncqr === 0xffff) throw new CommandError(Status.INVALID_FIELD, 'requested 65536 queues');
      if (t.hasIoQueues && !t.features.queuesAllocated) throw new CommandError(Status.COMMAND_SEQUENCE_ERROR, 'I/O queues exist');
      t.features = { ...t.features, queuesAllocated: true };
      // The controller always allocates every queue it has.
      return { dw0: queuesDw0(t) };
    }
    case FeatureId.VOLATILE_WRITE_CACHE:
      if (!t.volatileWriteCache) throw new CommandError(Status.INVALID_FIELD, 'no volatile write cache');
      t.features = { ...t.features, writeCache: cmd.cdw11 & 1 };
      return {};
    case FeatureId.INTERRUPT_VECTOR_CONFIG:
      return {};
    default: {
      const key = STORED[fid];
      if (!key) throw new CommandError(Status.INVALID_FIELD, `feature 0x${fid.toString(16)}`);
      const mask = fid === FeatureId.INTERRUPT_COALESCING ? 0xffff : 0xffffffff;
      t.features = { ...t.features, [key]: (cmd.cdw11 & mask) >>> 0 };
      return {};
    }
  }
}

async function getLogPage(cmd: NvmeCommand, t: AdminTarget): Promise<CommandResult> {
  const lid = cmd.cdw10 & 0xff;
  const retain = (cmd.cdw10 & (1 << 15)) !== 0;
  const dwords = ((cmd.cdw10 >>> 16) | ((cmd.cdw11 & 0xffff) << 16)) + 1;
  const offset = Number((BigInt(cmd.cdw13) << 32n) | BigInt(cmd.cdw12));
  if (offset % 4 !== 0) throw new CommandError(Status.INVALID_FIELD, 'log page offset is not dword aligned');
  let log: Buffer;
  switch (lid) {
    case LogPageId.ERROR:
      log = errorLog(t.errors, t.errorLogEntries);
      break;
    case LogPageId.SMART:
      if (cmd.nsid !== 0 && cmd.nsid !== NSID_ALL) activeNamespace(cmd.nsid, t);
      log = smartLog(t.healthNow());
      break;
    case LogPageId.FIRMWARE_SLOT:
      log = firmwareSlotLog(t.config.firmware);
      break;
    default:
      throw new CommandError(Status.INVALID_LOG_PAGE, `log page 0x${lid.toString(16)}`);
  }
  if (offset >= log.length) throw new CommandError(Status.INVALID_FIELD, `log page offset ${offset} is beyond ${log.length} bytes`);
  const length = dwords * 4;
  if (length > 1 << 20) throw new CommandError(Status.INVALID_FIELD, `log page transfer of ${length} bytes`);
  await sendData(cmd, t, log.subarray(offset), length);
  t.logRead(lid, retain);
  return {};
}

async function doorbellBufferConfig(cmd: NvmeCommand, t: AdminTarget): Promise<CommandResult> {
  if (cmd.prp1 & 0xfffn || cmd.prp2 & 0xfffn) throw new CommandError(Status.INVALID_FIELD, 'doorbell buffers must be page aligned');
  if (cmd.prp1 > BigInt(Number.MAX_SAFE_INTEGER) || cmd.prp2 > BigInt(Number.MAX_SAFE_INTEGER)) throw new CommandError(Status.INVALID_FIELD, 'doorbell buffer out of range');
  const doorbells = Number(cmd.prp1);
  const eventIdx = Number(cmd.prp2);
  const bytes = t.doorbellBufferBytes;
  if (!t.memory.mapped(doorbells, bytes, false) || !t.memory.mapped(eventIdx, bytes, true)) throw new CommandError(Status.INVALID_FIELD, 'doorbell buffers are not mapped');
  await t.setDoorbellBuffer(doorbells, eventIdx);
  return {};
}
