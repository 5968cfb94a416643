/**
 * The Identify data structures (NVMe 1.4, 5.15.2) and the log pages
 * (5.14.1) the controller returns, built from its description. Offsets are
 * the specification's byte offsets.
 */
import { PAGE_SIZE } from './constants.js';
import type { Namespace } from './namespace.js';

/** What Identify Controller reports. */
export interface ControllerIdentity {
  vendorId: number;
  subsystemVendorId: number;
  serial: string;
  model: string;
  firmware: string;
  /** Maximum data transfer size as a power of two of the 4 KiB page. */
  mdts: number;
  controllerId: number;
  version: number;
  namespaces: number;
  /** A volatile write cache is present (backends that flush). */
  volatileWriteCache: boolean;
  /** Dataset Management deallocate is offered. */
  dsm: boolean;
  /** Async Event Request Limit, 0-based. */
  aerl: number;
  /** Error log entries, 0-based. */
  elpe: number;
  /** Submission queue commands the controller may hold (MAXCMD). */
  maxCommands: number;
  /** Doorbell Buffer Config is offered (OACS bit 8). */
  shadowDoorbells: boolean;
}

function ascii(b: Buffer, at: number, len: number, text: string): void {
  // Fields are ASCII, left-justified and space padded.
  b.fill(0x20, at, at + len);
  b.write(text.replace(/[^\x20-\x7e]/g, '?').slice(0, len), at, 'latin1');
}

/** Optional NVM Command Support bits. */
const ONCS_DSM = 1 << 2;
const ONCS_WRITE_ZEROES = 1 << 3;
/** Optional Admin Command Support: Doorbell Buffer Config. */
const OACS_DBBUF = 1 << 8;

/** Identify Controller (CNS 01h). */
export function identifyController(c: ControllerIdentity): Buffer {
  const b = Buffer.alloc(PAGE_SIZE);
  b.writeUInt16LE(c.vendorId, 0);
  b.writeUInt16LE(c.subsystemVendorId, 2);
  ascii(b, 4, 20, c.serial);
  ascii(b, 24, 40, c.model);
  ascii(b, 64, 8, c.firmware);
  b[72] = 6; // recommended arbitration burst
  b[77] = c.mdts;
  b.writeUInt16LE(c.controllerId, 78);
  b.writeUInt32LE(c.version, 80);
  b[111] = 1; // controller type: I/O controller
  b.writeUInt16LE(c.shadowDoorbells ? OACS_DBBUF : 0, 256);
  b[258] = 3; // abort command limit, 0-based
  b[259] = c.aerl;
  b[260] = 0x03; // firmware: slot 1 read-only, one slot
  b[261] = 0x00; // log page attributes
  b[262] = c.elpe;
  b[263] = 0; // one power state
  b.writeUInt16LE(0x0157, 266); // warning composite temperature threshold, 343 K
  b.writeUInt16LE(0x0175, 268); // critical composite temperature threshold, 373 K
  b[512] = 0x66; // SQES: 64 bytes required and maximum
  b[513] = 0x44; // CQES: 16 bytes
  b.writeUInt16LE(c.maxCommands, 514);
  b.writeUInt32LE(c.namespaces, 516);
  b.writeUInt16LE((c.dsm ? ONCS_DSM : 0) | ONCS_WRITE_ZEROES, 520);
  b[525] = c.volatileWriteCache ? 1 : 0;
  b.write(`nqn.2026-11.io.muser:nvme:${c.serial}`.slice(0, 255), 768, 'latin1');
  // Power state 0: 25 W maximum power (centiwatts), entry and exit latency 0.
  b.writeUInt16LE(2500, 2048);
  return b;
}

/** Identify Namespace (CNS 00h). */
export function identifyNamespace(ns: Namespace): Buffer {
  const b = Buffer.alloc(PAGE_SIZE);
  const blocks = BigInt(ns.blocks);
  b.writeBigUInt64LE(blocks, 0); // NSZE
  b.writeBigUInt64LE(blocks, 8); // NCAP
  b.writeBigUInt64LE(blocks, 16); // NUSE
  b[24] = ns.capabilities.discard ? 1 << 0 : 0; // NSFEAT: thin provisioning when deallocation frees storage
  b[25] = 0; // one LBA format
  b[26] = 0; // FLBAS: format 0, no metadata
  // DLFEAT: deallocated blocks read as zeros; Write Zeroes may deallocate.
  b[33] = ns.capabilities.discard ? 0x01 | 0x08 : 0;
  b[99] = ns.readOnly ? 1 : 0; // NSATTR: write protected
  ns.nguid.copy(b, 104);
  ns.eui64.copy(b, 120);
  b.writeUInt32LE(ns.lbads << 16, 128); // LBAF0: LBADS, no metadata, best performance
  return b;
}

/** I/O Command Set Independent Identify Namespace (CNS 08h). */
export function identifyNamespaceIndependent(ns: Namespace): Buffer {
  const b = Buffer.alloc(PAGE_SIZE);
  b[0] = ns.capabilities.discard ? 1 : 0;
  b[8] = ns.readOnly ? 1 : 0; // NSATTR
  b[14] = 1; // NSTAT: ready
  return b;
}

/** Active Namespace ID list (CNS 02h): active ids above `after`. */
export function activeNamespaceList(ids: readonly number[], after: number): Buffer {
  const b = Buffer.alloc(PAGE_SIZE);
  let at = 0;
  for (const id of ids) {
    if (id <= after) continue;
    if (at >= PAGE_SIZE) break;
    b.writeUInt32LE(id, at);
    at += 4;
  }
  return b;
}

/** Namespace Identification Descriptor list (CNS 03h): EUI-64, NGUID and command set. */
export function namespaceDescriptors(ns: Namespace): Buffer {
  const b = Buffer.alloc(PAGE_SIZE);
  let at = 0;
  const put = (type: number, id: Buffer): void => {
    b[at] = type;
    b[at + 1] = id.length;
    id.copy(b, at + 4);
    at += 4 + id.length;
  };
  put(1, ns.eui64);
  put(2, ns.nguid);
  put(4, Buffer.from([0])); // command set: NVM
  return b;
}

/** Counters behind the SMART / Health log. */
export interface HealthCounters {
  /** 512-byte units read and written. */
  unitsRead: number;
  unitsWritten: number;
  readCommands: number;
  writeCommands: number;
  powerCycles: number;
  /** Seconds the controller has been powered. */
  powerOnSeconds: number;
  errorEntries: number;
}

function u128(b: Buffer, at: number, v: number): void {
  b.writeBigUInt64LE(BigInt(Math.max(0, Math.floor(v))), at);
}

/** SMART / Health Information log (02h), 512 bytes. */
export function smartLog(h: HealthCounters): Buffer {
  const b = Buffer.alloc(512);
  b[0] = 0; // critical warning
  b.writeUInt16LE(300, 1); // composite temperature, kelvin
  b[3] = 100; // available spare
  b[4] = 10; // spare threshold
  b[5] = 0; // percentage used
  // Data units are thousands of 512-byte units, rounded up.
  u128(b, 32, Math.ceil(h.unitsRead / 1000));
  u128(b, 48, Math.ceil(h.unitsWritten / 1000));
  u128(b, 64, h.readCommands);
  u128(b, 80, h.writeCommands);
  u128(b, 112, h.powerCycles);
  u128(b, 128, Math.floor(h.powerOnSeconds / 3600));
  u128(b, 176, h.errorEntries);
  return b;
}

/** Firmware Slot Information log (03h): slot 1 active, holding `firmware`. */
export function firmwareSlotLog(firmware: string): Buffer {
  const b = Buffer.alloc(512);
  b[0] = 0x01;
  ascii(b, 8, 8, firmware);
  return b;
}

/** One Error Information log entry (64 bytes). */
export interface ErrorEntry {
  count: number;
  sqid: number;
  cid: number;
  status: number;
  nsid: number;
}

/** Error Information log (01h): the newest entries first, `entries` slots. */
export function errorLog(errors: readonly ErrorEntry[], entries: number): Buffer {
  const b = Buffer.alloc(64 * entries);
  const newest = errors.slice(-entries).reverse();
  newest.forEach((e, i) => {
    const at = i * 64;
    b.writeBigUInt64LE(BigInt(e.count), at);
    b.writeUInt16LE(e.sqid, at + 8);
    b.writeUInt16LE(e.cid, at + 10);
    b.writeUInt16LE((e.status << 1) & 0xfffe, at + 12);
    b.writeUInt16LE(0xffff, at + 14); // parameter error location: not given
    b.writeUInt32LE(e.nsid, at + 24);
  });
  return b;
}
