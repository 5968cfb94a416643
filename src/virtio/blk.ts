/**
 * virtio-blk (virtio 1.2, 5.2) over a {@link BlockBackend}: reads and writes
 * go straight between guest memory (zero-copy views, pinned while the
 * backend works) and the backend; requests complete in whatever order the
 * backend finishes them, on as many queues as asked for.
 *
 * Every request is checked before the backend sees it: here its virtio
 * shape (a header in readable memory, data in the direction its type needs,
 * whole sectors within size_max / seg_max, a status byte at the end of
 * writable memory), then by {@link BlockDevice} the disk's rules (inside the
 * disk, writable, supported). A request that breaks a rule fails with
 * VIRTIO_BLK_S_IOERR (UNSUPP for unknown types and BlockError ENOTSUP); one
 * without a writable status byte sets DEVICE_NEEDS_RESET, since there is
 * nowhere to report its failure.
 *
 * Each request takes one path ({@link serveBlkRequest}): where its guest
 * memory has views and the backend finishes at once (a RAM disk, a cached
 * file read) it completes without a Promise; from the first step that
 * must wait (memory reached by messages, a backend that waits, a range
 * list) it goes on asynchronously, with the same checks.
 */
import { BlockError, type BlockBackend } from '../block/backend.js';
import { BlockDevice } from '../block/device.js';
import type { DeviceSpec, MaybePromise } from '../device/spec.js';
import { featureBit } from './constants.js';
import { u32, u64OrNaN } from '../layout/u64.js';
import { virtioDevice, type VirtioDeviceSpec, type VirtioQueueSpec } from './device.js';
import { isShareable, type ShareableBackend, type SharedBackend } from '../block/shared.js';
import { RequestError, type VirtqueueRequest } from './request.js';
import type { VirtioContext } from './transport.js';
import { configFieldsOf } from './config.js';
import { BLK_CONFIG, BLK_RANGE, BLK_REQUEST_HEADER, type BlkConfigFields } from './layouts.js';

/** virtio-blk feature bits. */
export const BlkFeature = {
  SIZE_MAX: 1,
  SEG_MAX: 2,
  GEOMETRY: 4,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
  TOPOLOGY: 10,
  CONFIG_WCE: 11,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
} as const;

/** Request types. */
export const BlkRequestType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
  DISCARD: 11,
  WRITE_ZEROES: 13,
} as const;

/** Status byte values. */
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

/** The virtio device type of a block device. */
export const VIRTIO_BLK_TYPE = 2;

const SECTOR = 512;
const HEADER = BLK_REQUEST_HEADER.size;
/** Where the request header's fields are: the per-request path reads them without decoding the header. */
const { type: HEADER_TYPE, sector: HEADER_SECTOR } = BLK_REQUEST_HEADER.offsets;
const ID_BYTES = 20;
const WRITE_ZEROES_UNMAP = 1;

/** Options of {@link virtioBlk}. */
export interface VirtioBlkOptions {
  backend: BlockBackend;
  /** Request queues (default 1; more offers VIRTIO_BLK_F_MQ). */
  queues?: number;
  /** Largest queue size (default 256). */
  queueSize?: number;
  /** Serial number returned by GET_ID (up to 20 bytes; default "muser"). */
  serial?: string;
  /** Refuse writes even when the backend takes them. */
  readOnly?: boolean;
  /** Logical block size reported (default 512). */
  blockSize?: number;
  /** Largest data segment in bytes (default 64 KiB). */
  sizeMax?: number;
  /** Largest number of data segments per request (default queue size - 2). */
  segMax?: number;
  /** Largest discard / write-zeroes range in sectors (default 2^22, 2 GiB). */
  maxDiscardSectors?: number;
  /** Largest number of discard / write-zeroes segments per request (default 32). */
  maxDiscardSegments?: number;
  /** Device name for logs. */
  name?: string;
  /**
   * Serve the queues on this many worker threads (queue i on thread
   * i % workers), each with its own backend over the same storage: the
   * backend must be shareable (openFileBackend, memfdBackend).
   */
  workers?: number;
  /**
   * How long a reset waits for the requests it abandons (reads still
   * filling guest memory) before it revokes that memory from under them
   * and completes; on worker threads, before it ends and restarts the
   * thread (default 30000 ms).
   */
  resetTimeoutMs?: number;
  /** The notify page in memory the client maps, watched by muser (see {@link VirtioDeviceSpec.mmapDoorbells}). */
  mmapDoorbells?: boolean;
  /** Idle queues poll their avail ring with notifications off (see {@link VirtioDeviceSpec.pollMicroseconds}). */
  pollMicroseconds?: number;
}

/** Builds a virtio-blk device over `backend`. */
export function virtioBlk(options: VirtioBlkOptions): DeviceSpec {
  const backend = options.backend;
  const queues = options.queues ?? 1;
  const queueSize = options.queueSize ?? 256;
  const blockSize = options.blockSize ?? SECTOR;
  const sizeMax = options.sizeMax ?? 64 * 1024;
  const segMax = options.segMax ?? Math.max(1, queueSize - 2);
  const maxRangeSectors = options.maxDiscardSectors ?? 1 << 22;
  const maxRangeSegs = options.maxDiscardSegments ?? 32;
  const serial = Buffer.alloc(ID_BYTES);
  Buffer.from(options.serial ?? 'muser', 'utf8').copy(serial, 0, 0, ID_BYTES);
  if (!Number.isInteger(queues) || queues < 1 || queues > 1024) throw new RangeError(`queues must be 1..1024, got ${queues}`);
  if (backend.size % SECTOR !== 0) throw new RangeError(`backend size ${backend.size} is not a multiple of 512`);
  if (blockSize < SECTOR || blockSize > 4096 || (blockSize & (blockSize - 1)) !== 0) throw new RangeError(`block size must be a power of two from 512 to 4096, got ${blockSize}`);
  // virtio-blk addresses the disk in 512-byte sectors whatever blk_size says.
  const disk = new BlockDevice(backend, { readOnly: options.readOnly });
  const readOnly = disk.readOnly;

  let features = featureBit(BlkFeature.SIZE_MAX) | featureBit(BlkFeature.SEG_MAX) | featureBit(BlkFeature.BLK_SIZE) | featureBit(BlkFeature.TOPOLOGY);
  if (backend.capabilities.flush) features |= featureBit(BlkFeature.FLUSH);
  if (queues > 1) features |= featureBit(BlkFeature.MQ);
  if (readOnly) features |= featureBit(BlkFeature.RO);
  else {
    if (backend.capabilities.discard) features |= featureBit(BlkFeature.DISCARD);
    features |= featureBit(BlkFeature.WRITE_ZEROES);
  }

  const limits: BlkLimits = { sizeMax, segMax, maxRangeSectors, maxRangeSegs, serial, totalMax: sizeMax * segMax, header: Buffer.alloc(HEADER) };
  const handle = (req: VirtqueueRequest, ctx: Pick<VirtioContext, 'needsReset' | 'warnDriver'>): MaybePromise<number> => serveBlkRequest(req, ctx, disk, limits);
  const workers = options.workers ?? 0;
  if (!Number.isInteger(workers) || workers < 0 || workers > queues) throw new RangeError(`workers must be 0..${queues} (the queue count), got ${workers}`);
  if (workers > 0 && !isShareable(backend)) throw new TypeError('virtio-blk on worker threads needs a backend each thread can open: openFileBackend() or memfdBackend()');
  const queueSpec = (i: number): VirtioQueueSpec =>
    workers > 0
      ? {
          size: queueSize,
          worker: {
            module: new URL('./blk-worker.js', import.meta.url),
            data: (): BlkWorkerData => ({ backend: (backend as ShareableBackend).share(), readOnly, limits: { sizeMax, segMax, maxRangeSectors, maxRangeSegs, serial: Uint8Array.from(serial), totalMax: limits.totalMax } }),
            thread: i % workers,
            resetTimeoutMs: options.resetTimeoutMs,
          },
        }
      : { size: queueSize, handle };

  return virtioDevice({
    name: options.name ?? 'virtio-blk',
    type: VIRTIO_BLK_TYPE,
    classCode: 0x010000,
    features,
    resetTimeoutMs: options.resetTimeoutMs,
    mmapDoorbells: options.mmapDoorbells,
    pollMicroseconds: options.pollMicroseconds,
    queues: Array.from({ length: queues }, (_, i) => queueSpec(i)),
    config: configFieldsOf(BLK_CONFIG),
    configValues: {
      capacity: BigInt(backend.size / SECTOR),
      size_max: sizeMax,
      seg_max: segMax,
      cylinders: 0,
      heads: 0,
      sectors: 0,
      blk_size: blockSize,
      physical_block_exp: 0,
      alignment_offset: 0,
      min_io_size: 1,
      opt_io_size: 0,
      writeback: backend.capabilities.flush ? 1 : 0,
      num_queues: queues,
      max_discard_sectors: maxRangeSectors,
      max_discard_seg: maxRangeSegs,
      discard_sector_alignment: blockSize / SECTOR,
      max_write_zeroes_sectors: maxRangeSectors,
      max_write_zeroes_seg: maxRangeSegs,
      write_zeroes_may_unmap: backend.capabilities.discard ? 1 : 0,
    } satisfies BlkConfigFields,
  });
}

/** The request limits a virtio-blk device announces, and its scratch space. */
export interface BlkLimits {
  sizeMax: number;
  segMax: number;
  totalMax: number;
  maxRangeSectors: number;
  maxRangeSegs: number;
  serial: Uint8Array;
  /** Scratch for the header of a request read at once (used and done with before it returns). */
  header: Buffer;
}

/** What a virtio-blk worker thread starts with (structured-cloned: plain bytes, no Buffers). */
export interface BlkWorkerData {
  backend: SharedBackend;
  readOnly: boolean;
  /** The limits without the scratch (each thread makes its own). */
  limits: Omit<BlkLimits, 'header'>;
}

/** The limits a worker thread serves with: its own scratch space. */
export function workerLimits(data: BlkWorkerData): BlkLimits {
  return { ...data.limits, header: Buffer.alloc(HEADER) };
}

/** Status bytes, shared (they are only ever copied into guest memory). */
const STATUS_BYTES = [Uint8Array.of(BlkStatus.OK), Uint8Array.of(BlkStatus.IOERR), Uint8Array.of(BlkStatus.UNSUPP)];

/**
 * Serves one request and writes its status byte; returns the bytes
 * written. One path: it finishes at once (no Promise, no closure) when the
 * request's memory has views and the backend does not wait, and returns a
 * Promise from the first step that must wait.
 */
export function serveBlkRequest(req: VirtqueueRequest, ctx: Pick<VirtioContext, 'needsReset' | 'warnDriver'>, disk: BlockDevice, limits: BlkLimits): MaybePromise<number> {
  if (req.writableLength < 1) {
    ctx.needsReset(`virtio-blk: request ${req.head} on queue ${req.queue} has no status byte`);
    return 0;
  }
  const statusAt = req.writableLength - 1;
  let data: MaybePromise<number>;
  try {
    data = execute(req, disk, limits, statusAt);
  } catch (e) {
    return failed(req, ctx, statusAt, e);
  }
  if (data instanceof Promise) {
    return data.then(
      (n) => finish(req, ctx, statusAt, BlkStatus.OK, n),
      (e: unknown) => failed(req, ctx, statusAt, e),
    );
  }
  return finish(req, ctx, statusAt, BlkStatus.OK, data);
}

/** The request failed: its status says so to the driver, and the server's log says why to its developer. */
function failed(req: VirtqueueRequest, ctx: Pick<VirtioContext, 'needsReset' | 'warnDriver'>, statusAt: number, e: unknown): MaybePromise<number> {
  const status = statusOf(e);
  if (!req.abandoned) ctx.warnDriver(`queue ${req.queue}, request ${req.head}: ${status === BlkStatus.UNSUPP ? 'UNSUPP' : 'IOERR'}: ${e instanceof Error ? e.message : String(e)}`);
  return finish(req, ctx, statusAt, status, 0);
}

/** Writes the status byte; returns (or resolves with) the bytes written: data plus the status byte. */
function finish(req: VirtqueueRequest, ctx: Pick<VirtioContext, 'needsReset' | 'warnDriver'>, statusAt: number, status: number, written: number): MaybePromise<number> {
  let w: MaybePromise<void>;
  try {
    w = req.write(statusAt, STATUS_BYTES[status]);
  } catch (e) {
    return statusFailed(req, ctx, e);
  }
  if (w instanceof Promise) {
    return w.then(
      () => written + 1,
      (e: unknown) => statusFailed(req, ctx, e),
    );
  }
  return written + 1;
}

/** The status byte a failure reports. */
function statusOf(e: unknown): number {
  return (e instanceof BlockError && e.code === 'ENOTSUP') || e instanceof Unsupported ? BlkStatus.UNSUPP : BlkStatus.IOERR;
}

/** Nowhere to report the request's failure: the device needs a reset. */
function statusFailed(req: VirtqueueRequest, ctx: Pick<VirtioContext, 'needsReset' | 'warnDriver'>, e: unknown): number {
  // A request the driver reset away: its memory may be gone, and the new setup is not broken.
  if (!req.abandoned) ctx.needsReset(`virtio-blk: cannot write the status of request ${req.head}: ${(e as Error).message}`);
  return 0;
}

class Unsupported extends Error {}

/** Runs the request; returns (or resolves with) data bytes written, before the status byte. */
function execute(req: VirtqueueRequest, disk: BlockDevice, limits: BlkLimits, statusAt: number): MaybePromise<number> {
  if (req.readableLength < HEADER) throw new RequestError('request header is not in device-readable memory');
  // The scratch header is done with before this returns when the read finishes at once.
  const header = req.read(0, HEADER, limits.header);
  return header instanceof Promise ? header.then((h) => executeType(req, h, disk, limits, statusAt)) : executeType(req, header, disk, limits, statusAt);
}

function executeType(req: VirtqueueRequest, header: Buffer, disk: BlockDevice, limits: BlkLimits, statusAt: number): MaybePromise<number> {
  const type = u32(header, HEADER_TYPE);
  const extraReadable = req.readableLength - HEADER;
  switch (type) {
    case BlkRequestType.IN: {
      if (extraReadable !== 0) throw new RequestError('IN data must be device-writable');
      const offset = dataRange(sectorOf(header), statusAt, limits, req, 'writable');
      disk.check('read', offset, statusAt); // before taking guest memory
      return transfer(req, 'writable', 0, statusAt, disk, offset, statusAt);
    }
    case BlkRequestType.OUT: {
      if (statusAt !== 0) throw new RequestError('OUT data must be device-readable');
      const offset = dataRange(sectorOf(header), extraReadable, limits, req, 'readable', HEADER);
      disk.check('write', offset, extraReadable);
      return transfer(req, 'readable', HEADER, extraReadable, disk, offset, 0);
    }
    case BlkRequestType.FLUSH: {
      const r = disk.capabilities.flush ? disk.flush() : undefined;
      return r instanceof Promise ? r.then(() => 0) : 0;
    }
    case BlkRequestType.GET_ID: {
      if (extraReadable !== 0) throw new RequestError('GET_ID buffer must be device-writable');
      const n = Math.min(ID_BYTES, statusAt);
      const w = req.write(0, limits.serial.subarray(0, n));
      return w instanceof Promise ? w.then(() => n) : n;
    }
    case BlkRequestType.DISCARD:
    case BlkRequestType.WRITE_ZEROES:
      return ranges(req, type, disk, limits, extraReadable, statusAt);
    default:
      throw new Unsupported(`request type ${type}`);
  }
}

/** Checks a data transfer against size_max / seg_max; returns its byte offset (the disk checks range and alignment). */
function dataRange(sector: number, length: number, limits: BlkLimits, req: VirtqueueRequest, area: 'readable' | 'writable', skip = 0): number {
  if (length > limits.totalMax) throw new RequestError(`request of ${length} bytes exceeds ${limits.totalMax}`);
  let left = skip;
  for (let i = 0, n = req.bufferCount(area); i < n; i++) {
    const len = req.bufferLength(area, i);
    const data = Math.max(0, len - left);
    left = Math.max(0, left - len);
    if (data > limits.sizeMax) throw new RequestError(`a segment of ${data} bytes exceeds size_max`);
  }
  return sector * SECTOR;
}

/** The header's u64 sector as a number (NaN beyond 2^53: the disk's range check then refuses it). */
function sectorOf(header: Uint8Array): number {
  return u64OrNaN(header, HEADER_SECTOR);
}

/**
 * Moves the data between the area's [at, at+length) and the disk at
 * `offset`: through the request's views (no copy), held pinned only if the
 * backend must wait; else through buffers() (bounce buffers where memory
 * has no views). Returns `result` when done.
 */
function transfer(req: VirtqueueRequest, area: 'readable' | 'writable', at: number, length: number, disk: BlockDevice, offset: number, result: number): MaybePromise<number> {
  if (length === 0) return result;
  const views = req.views(area, at, length);
  if (!views) return transferBuffered(req, area, at, length, disk, offset, result);
  const io = area === 'readable' ? disk.write(offset, views) : disk.read(offset, views);
  return io instanceof Promise ? req.hold(area, at, length, io).then(() => result) : result;
}

async function transferBuffered(req: VirtqueueRequest, area: 'readable' | 'writable', at: number, length: number, disk: BlockDevice, offset: number, result: number): Promise<number> {
  const b = await req.buffers(area, at, length);
  let ok = false;
  try {
    await (area === 'readable' ? disk.write(offset, b.buffers) : disk.read(offset, b.buffers));
    ok = true;
  } finally {
    await b.finish(ok);
  }
  return result;
}

/** DISCARD and WRITE_ZEROES: a list of {u64 sector, u32 sectors, u32 flags}. */
async function ranges(req: VirtqueueRequest, type: number, disk: BlockDevice, limits: BlkLimits, bytes: number, statusAt: number): Promise<number> {
  if (statusAt !== 0) throw new RequestError('range lists must be device-readable');
  const op = type === BlkRequestType.DISCARD ? 'discard' : 'write-zeroes';
  if (bytes === 0 || bytes % BLK_RANGE.size !== 0) throw new RequestError(`range list of ${bytes} bytes`);
  const count = bytes / BLK_RANGE.size;
  if (count > limits.maxRangeSegs) throw new RequestError(`${count} ranges exceed ${limits.maxRangeSegs}`);
  const list = await req.read(HEADER, bytes);
  const parsed: { offset: number; length: number; unmap: boolean }[] = [];
  for (const { sector, numSectors: sectors, flags } of BLK_RANGE.readArray(list, 0, count)) {
    if (type === BlkRequestType.DISCARD && flags !== 0) throw new Unsupported('discard with flags');
    if (flags & ~WRITE_ZEROES_UNMAP) throw new Unsupported(`range flags 0x${flags.toString(16)}`);
    if (sectors > limits.maxRangeSectors) throw new RequestError(`range of ${sectors} sectors`);
    const range = { offset: Number(sector) * SECTOR, length: sectors * SECTOR, unmap: (flags & WRITE_ZEROES_UNMAP) !== 0 };
    // The whole list is vetted before any range runs, so a bad one changes nothing.
    disk.check(op, range.offset, range.length);
    parsed.push(range);
  }
  for (const r of parsed) {
    if (r.length === 0) continue;
    if (op === 'discard') await disk.discard(r.offset, r.length);
    else await disk.writeZeroes(r.offset, r.length, { unmap: r.unmap });
  }
  return 0;
}
