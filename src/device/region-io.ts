/**
 * Serving region accesses: config space, the MSI-X table and PBA, then the
 * device's callbacks or shared memory. Ranges are checked before any of it.
 */
import type { Device } from './device.js';
import { DeviceError, Errno } from './errors.js';
import { RegionInfoFlag } from '../protocol/constants.js';
import { CONFIG_REGION, type Region } from './regions.js';
import type { MaybePromise, ReadResult } from './types.js';

/**
 * The region when [offset, offset+count) lies inside it and it allows the
 * access, else undefined: {@link checkAccess} without the reason, for the
 * in-place path, which leaves refused accesses to the general one.
 */
export function accessibleRegion(device: Device, index: number, offset: number, count: number, write: boolean): Region | undefined {
  const r = device.regions[index];
  if (!r || r.size === 0 || count === 0 || offset >= r.size || count > r.size - offset) return undefined;
  return r.flags & (write ? RegionInfoFlag.WRITE : RegionInfoFlag.READ) ? r : undefined;
}

/** Finds the region and checks that [offset, offset+count) lies inside it; DeviceError (EINVAL, EPERM) saying why not. */
export function checkAccess(device: Device, index: number, offset: number, count: number, write: boolean): Region {
  const ok = accessibleRegion(device, index, offset, count, write);
  if (ok) return ok;
  const r = device.regions[index];
  if (!r || r.size === 0) throw new DeviceError(Errno.EINVAL, `no region ${index}`);
  if (count === 0 || offset >= r.size || count > r.size - offset) {
    throw new DeviceError(Errno.EINVAL, `region ${index}: access ${offset}+${count} outside its ${r.size} bytes`);
  }
  throw new DeviceError(Errno.EPERM, `region ${index} is not ${write ? 'writable' : 'readable'}`);
}

/** Reads `count` bytes of a checked range. */
export function readRegion(device: Device, r: Region, offset: number, count: number): MaybePromise<Uint8Array> {
  if (r.index === CONFIG_REGION) return device.configLayout.read(device, offset, count, unclaimedLog(device));
  const msix = msixPart(device, r.index, offset, count);
  if (msix === 'table') return device.msix!.read(offset - device.msixPlacement!.tableOffset, count);
  if (msix === 'pba') return device.msix!.readPba(offset - device.msixPlacement!.pbaOffset, count);
  const spec = r.spec;
  if (spec?.read) {
    const v = spec.read(offset, count, device);
    return isThenable<ReadResult>(v) ? Promise.resolve(v).then((x) => toBytes(x, count)) : toBytes(v, count);
  }
  if (r.memory) return r.memory.bytes.subarray(offset, offset + count);
  device.unmodeled.note(r.index, offset, count, count, 'read');
  return new Uint8Array(count);
}

/**
 * {@link readRegion} into `out` at `at`: bytes served at once are copied
 * there (plain shared memory without allocating a view of it) and
 * undefined is returned; a Promise when they come later (`out` untouched).
 */
export function readRegionInto(device: Device, r: Region, offset: number, count: number, out: Uint8Array, at: number): Promise<Uint8Array> | undefined {
  // Plain memory is the last of readRegion's cases: config space, MSI-X and callbacks come first.
  const memory = r.memory;
  if (memory && r.index !== CONFIG_REGION && !r.spec?.read && msixPart(device, r.index, offset, count) === undefined) {
    const bytes = memory.bytes;
    if (count <= 16) for (let i = 0; i < count; i++) out[at + i] = bytes[offset + i];
    else out.set(bytes.subarray(offset, offset + count), at);
    return undefined;
  }
  const data = readRegion(device, r, offset, count);
  if (data instanceof Promise) return data;
  out.set(data, at);
  return undefined;
}

/**
 * Writes a checked range. `data` may be a view of the receive buffer: the
 * session keeps it intact while the returned Promise is pending.
 */
export function writeRegion(device: Device, r: Region, offset: number, data: Buffer): MaybePromise<void> {
  if (r.index === CONFIG_REGION) {
    const done = device.configLayout.write(device, offset, data, unclaimedLog(device));
    if (done) return done.then(() => device.takeConfigReset());
    return device.takeConfigReset();
  }
  const msix = msixPart(device, r.index, offset, data.length);
  if (msix === 'table') return device.writeMsixTable(offset - device.msixPlacement!.tableOffset, data);
  if (msix === 'pba') return; // read-only
  // A doorbell served on a worker thread: the write goes to that thread.
  if (device.doorbellThreads?.forward(r.index, offset, data)) return;
  const spec = r.spec;
  if (spec?.write) return promiseOf(spec.write(offset, data, device));
  if (r.memory) r.memory.bytes.set(data, offset);
  else device.unmodeled.note(r.index, offset, data.length, data.length, 'write');
}

/** Unclaimed config bytes are traced unless raw config hooks may be serving them. */
function unclaimedLog(device: Device): Device['traceLog'] {
  return device.spec.config ? undefined : device.traceLog;
}

/** A callback may return any thenable (whatever the function's syntax): the server waits on a Promise. */
function promiseOf(result: MaybePromise<void>): MaybePromise<void> {
  return isThenable(result) ? Promise.resolve(result) : result;
}

/** True for a Promise or anything else with a `then` method. */
export function isThenable<T>(v: unknown): v is PromiseLike<T> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}

/** Which part of the MSI-X structures an access hits, if any. */
function msixPart(device: Device, index: number, offset: number, count: number): 'table' | 'pba' | undefined {
  const p = device.msixPlacement;
  if (!p || p.bar !== index) return undefined;
  if (hits(offset, count, p.tableOffset, p.tableSize)) {
    if (!inside(offset, count, p.tableOffset, p.tableSize)) throw new DeviceError(Errno.EINVAL, 'access straddles the MSI-X table');
    return 'table';
  }
  if (hits(offset, count, p.pbaOffset, p.pbaSize)) {
    if (!inside(offset, count, p.pbaOffset, p.pbaSize)) throw new DeviceError(Errno.EINVAL, 'access straddles the MSI-X PBA');
    return 'pba';
  }
  return undefined;
}

/** True when [offset, offset+count) overlaps [start, start+size). */
function hits(offset: number, count: number, start: number, size: number): boolean {
  return offset < start + size && offset + count > start;
}

/** True when [offset, offset+count) lies within [start, start+size). */
function inside(offset: number, count: number, start: number, size: number): boolean {
  return offset >= start && offset + count <= start + size;
}

/** Converts what a read callback returned into exactly `count` bytes. */
export function toBytes(v: ReadResult, count: number): Uint8Array {
  if (v instanceof Uint8Array) {
    if (v.length !== count) throw new DeviceError(Errno.EIO, `read callback returned ${v.length} bytes, ${count} wanted`);
    return v;
  }
  const out = Buffer.alloc(count);
  if (typeof v === 'bigint') {
    let x = BigInt.asUintN(64, v);
    for (let i = 0; i < count && i < 8; i++, x >>= 8n) out[i] = Number(x & 0xffn);
    return out;
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new DeviceError(Errno.EIO, `read callback returned ${typeof v}`);
  let x = v >= 0 ? v : v + 2 ** 32;
  for (let i = 0; i < count && i < 6; i++) {
    out[i] = x % 256;
    x = Math.floor(x / 256);
  }
  return out;
}
