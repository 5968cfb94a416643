/**
 * The Identify data structures (NVMe 1.4, 5.15.2) and the log pages
 * (5.14.1) the controller returns, built from its description. The fixed
 * structures are declared in layouts.ts; the rest give the specification's
 * byte offsets here.
 */
import { PAGE_SIZE } from './constants.js';
import { ERROR_LOG_ENTRY, IDENTIFY_CONTROLLER, IDENTIFY_NAMESPACE, IDENTIFY_NAMESPACE_INDEPENDENT } from './layouts.js';
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

/** `text` as an ASCII field of `len` bytes: left-justified and space padded. */
function ascii(text: string, len: number): Buffer {
  const b = Buffer.alloc(len, 0x20);
  b.write(text.replace(/[^\x20-\x7e]/g, '?').slice(0, len), 0, 'latin1');
  return b;
}

/** Optional NVM Command Support bits. */
const ONCS_DSM = 1 << 2;
const ONCS_WRITE_ZEROES = 1 << 3;
/** Optional Admin Command Support: Doorbell Buffer Config. */
const OACS_DBBUF = 1 << 8;

/** Identify Controller (CNS 01h). */
export function identifyController(c: ControllerIdentity): Buffer {
  return IDENTIFY_CONTROLLER.encode({
    vid: c.vendorId,
    ssvid: c.subsystemVendorId,
    sn: ascii(c.serial, 20),
    mn: ascii(c.model, 40),
    fr: ascii(c.firmware, 8),
    rab: 6,
    mdts: c.mdts,
    cntlid: c.controllerId,
    ver: c.version,
    cntrltype: 1, // I/O controller
    oacs: c.shadowDoorbells ? OACS_DBBUF : 0,
    acl: 3,
    aerl: c.aerl,
    frmw: 0x03, // slot 1 read-only, one slot
    lpa: 0,
    elpe: c.elpe,
    npss: 0, // one power state
    wctemp: 0x0157, // 343 K
    cctemp: 0x0175, // 373 K
    sqes: 0x66, // 64 bytes required and maximum
    cqes: 0x44, // 16 bytes
    maxcmd: c.maxCommands,
    nn: c.namespaces,
    oncs: (c.dsm ? ONCS_DSM : 0) | ONCS_WRITE_ZEROES,
    vwc: c.volatileWriteCache ? 1 : 0,
    subnqn: Buffer.from(`nqn.2026-11.io.muser:nvme:${c.serial}`.slice(0, 255), 'latin1'),
    psd0Mp: 2500, // 25 W; entry and exit latency 0
  });
}

/** Identify Namespace (CNS 00h). */
export function identifyNamespace(ns: Namespace): Buffer {
  const discard = ns.capabilities.discard;
  return IDENTIFY_NAMESPACE.encode({
    nsze: ns.blocks,
    ncap: ns.blocks,
    nuse: ns.blocks,
    nsfeat: discard ? 1 << 0 : 0, // thin provisioning when deallocation frees storage
    nlbaf: 0, // one LBA format
    flbas: 0, // format 0, no metadata
    dlfeat: discard ? 0x01 | 0x08 : 0, // deallocated blocks read as zeros; Write Zeroes may deallocate
    nsattr: ns.readOnly ? 1 : 0, // write protected
    nguid: ns.nguid,
    eui64: ns.eui64,
    lbaf0Ms: 0,
    lbaf0Lbads: ns.lbads,
    lbaf0Rp: 0, // best performance
  });
}

/** I/O Command Set Independent Identify Namespace (CNS 08h). */
export function identifyNamespaceIndependent(ns: Namespace): Buffer {
  return IDENTIFY_NAMESPACE_INDEPENDENT.encode({
    nsfeat: ns.capabilities.discard ? 1 : 0,
    nsattr: ns.readOnly ? 1 : 0,
    nstat: 1, // ready
  });
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

/** Counts a finished Read or Write in the SMART counters (`bytes` in 512-byte units). */
export function countIo(h: Pick<HealthCounters, 'unitsRead' | 'unitsWritten' | 'readCommands' | 'writeCommands'>, write: boolean, bytes: number): void {
  if (write) {
    h.writeCommands++;
    h.unitsWritten += bytes / 512;
  } else {
    h.readCommands++;
    h.unitsRead += bytes / 512;
  }
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
  ascii(firmware, 8).copy(b, 8);
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
  const b = Buffer.alloc(ERROR_LOG_ENTRY.size * entries);
  const newest = errors.slice(-entries).reverse();
  ERROR_LOG_ENTRY.writeArray(
    b,
    0,
    newest.map((e) => ({
      errorCount: e.count,
      sqid: e.sqid,
      cid: e.cid,
      status: (e.status << 1) & 0xfffe,
      parameterErrorLocation: 0xffff, // not given
      lba: 0,
      nsid: e.nsid,
    })),
  );
  return b;
}
