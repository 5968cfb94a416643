/**
 * Client side of live migration (VFIO migration v2 over vfio-user): typed
 * wrappers for the DEVICE_FEATURE operations, dirty-page logging, and
 * {@link migrate}, which moves a device from one server to another:
 *
 *   destination -> RESUMING
 *   source -> PRE_COPY (when offered): stream to the destination until the
 *     source has nothing more for now; dirty report
 *   source -> STOP_COPY: stream the rest; final dirty report
 *   source -> STOP; destination -> STOP (it loads) -> RUNNING
 *
 * Data goes from source to destination chunk by chunk (each at most the
 * negotiated max_data_xfer_size), reading the next chunk while the last
 * one is being written. If anything fails the source is put back in
 * RUNNING, its state intact.
 */
import { DeviceFeatureFlag, FeatureId, MigrationFlag, MigrationState } from '../protocol/constants.js';
import type { DmaLoggingRange } from '../protocol/device-feature.js';
import type { Client } from './client.js';

export { MigrationFlag, MigrationState } from '../protocol/constants.js';
export type { DmaLoggingRange } from '../protocol/device-feature.js';

const { GET, SET } = DeviceFeatureFlag;
/** data_fd is unused in vfio-user; -1 as in VFIO. */
const NO_FD = 0xffffffff;
const DEFAULT_CHUNK = 1024 * 1024;
/** Largest bitmap asked for in one report. */
const MAX_BITMAP = 64 * 1024;

/** VFIO_MIGRATION_* flags of the device (GET MIGRATION). Rejects when it does not migrate. */
export async function migrationFlags(c: Client): Promise<number> {
  const r = await c.deviceFeature(FeatureId.MIGRATION | GET, { kind: 'none' }, 16);
  if (r.data.kind !== 'migration') throw new Error('MIGRATION reply without flags');
  return r.data.flags;
}

/** The device's migration state (GET MIG_DEVICE_STATE). */
export async function getMigrationState(c: Client): Promise<MigrationState> {
  const r = await c.deviceFeature(FeatureId.MIG_DEVICE_STATE | GET, { kind: 'none' }, 16);
  if (r.data.kind !== 'mig-state') throw new Error('MIG_DEVICE_STATE reply without a state');
  return r.data.deviceState;
}

/** Moves the device to `state` (SET MIG_DEVICE_STATE); resolves once it got there. */
export async function setMigrationState(c: Client, state: MigrationState): Promise<void> {
  await c.deviceFeature(FeatureId.MIG_DEVICE_STATE | SET, { kind: 'mig-state', deviceState: state, dataFd: NO_FD }, 16);
}

/**
 * Reads the saving stream until the device has nothing more for now (a
 * short read), handing each chunk to `onChunk`. Resolves with the byte count.
 */
export async function readMigrationData(c: Client, chunkSize: number, onChunk: (data: Buffer) => unknown): Promise<number> {
  let total = 0;
  for (;;) {
    const data = await c.migDataRead(chunkSize);
    if (data.length > 0) await onChunk(data);
    total += data.length;
    if (data.length < chunkSize) return total;
  }
}

/** Writes `data` to the resuming stream in chunks of at most `chunkSize`. */
export async function writeMigrationData(c: Client, data: Uint8Array, chunkSize: number): Promise<void> {
  for (let off = 0; off < data.length; off += chunkSize) await c.migDataWrite(data.subarray(off, off + chunkSize));
}

/** Starts DMA dirty-page logging; no ranges means everything. Resolves with the page size the device chose. */
export async function startDirtyLogging(c: Client, pageSize = 4096, ranges: DmaLoggingRange[] = []): Promise<number> {
  const r = await c.deviceFeature(FeatureId.DMA_LOGGING_START | SET, { kind: 'dma-logging-start', pageSize, ranges }, 8 + 16 + 16 * ranges.length);
  return r.data.kind === 'dma-logging-start' ? r.data.pageSize : pageSize;
}

/** Stops DMA dirty-page logging. */
export async function stopDirtyLogging(c: Client): Promise<void> {
  await c.deviceFeature(FeatureId.DMA_LOGGING_STOP | SET, { kind: 'none' }, 8);
}

/** Pages the device wrote in [iova, iova+length) since the last report (which this one clears). */
export async function dirtyReport(c: Client, iova: number, length: number, pageSize = 4096): Promise<number[]> {
  const pages: number[] = [];
  const step = MAX_BITMAP * 8 * pageSize;
  for (let at = iova; at < iova + length; at += step) {
    const len = Math.min(step, iova + length - at);
    const bitmapBytes = Math.ceil(Math.ceil(len / pageSize) / 64) * 8;
    const r = await c.deviceFeature(FeatureId.DMA_LOGGING_REPORT | GET, { kind: 'dma-logging-report', iova: at, length: len, pageSize }, 8 + 24 + bitmapBytes);
    if (r.data.kind !== 'dma-logging-bitmap') throw new Error('DMA_LOGGING_REPORT reply without a bitmap');
    pages.push(...bitmapPages(r.data.bitmap, at, pageSize, len));
  }
  return pages;
}

/** The addresses of the pages set in a report bitmap (bit i of u64 word i/64, little-endian). */
export function bitmapPages(bitmap: Uint8Array, iova: number, pageSize: number, length = bitmap.length * 8 * pageSize): number[] {
  const out: number[] = [];
  const n = Math.min(bitmap.length * 8, Math.ceil(length / pageSize));
  for (let i = 0; i < n; i++) if (bitmap[i >> 3]! & (1 << (i & 7))) out.push(iova + i * pageSize);
  return out;
}

/** A dirty-page report taken during {@link migrate}. */
export interface DirtyReport {
  phase: 'pre-copy' | 'stop-copy';
  range: DmaLoggingRange;
  /** Addresses of the dirty pages. */
  pages: number[];
}

/** Options for {@link migrate}. */
export interface MigrateOptions {
  /** Go through PRE_COPY when the source offers it (default true). */
  preCopy?: boolean;
  /** Bytes per MIG_DATA_READ / MIG_DATA_WRITE (default: the smallest max_data_xfer_size either side offered, at most 1 MiB). */
  chunkSize?: number;
  /** Leave the destination RUNNING at the end (default true); false leaves it in STOP. */
  resume?: boolean;
  /** Log the source's DMA writes to these ranges during migration and report them. */
  dirtyLog?: { ranges: DmaLoggingRange[]; pageSize?: number };
  /** Called with each dirty-page report. */
  onDirty?(report: DirtyReport): void;
  /** Called at each step, for progress output. */
  onStep?(step: string): void;
}

/** What {@link migrate} did. */
export interface MigrationResult {
  preCopyBytes: number;
  stopCopyBytes: number;
  /** MIG_DATA_READ replies that carried data. */
  chunks: number;
  chunkSize: number;
  /** Whole migration, milliseconds. */
  totalMs: number;
  /** From the source stopping to the destination running (or stopped, without resume). */
  downtimeMs: number;
  /** Dirty pages reported over all reports. */
  dirtyPages: number;
}

/** Streams the source's data for the current phase into the destination. */
async function pump(source: Client, destination: Client, chunkSize: number, count: () => void): Promise<number> {
  let writing: Promise<void> = Promise.resolve();
  let total = 0;
  try {
    for (;;) {
      const data = await source.migDataRead(chunkSize);
      await writing;
      if (data.length > 0) {
        count();
        writing = destination.migDataWrite(data);
      }
      total += data.length;
      if (data.length < chunkSize) break;
    }
  } finally {
    await writing;
  }
  return total;
}

/** Live-migrates the device behind `source` into the server behind `destination`. */
export async function migrate(source: Client, destination: Client, options: MigrateOptions = {}): Promise<MigrationResult> {
  const step = options.onStep ?? (() => {});
  const started = performance.now();
  const limits = [source.server, destination.server, source.offered, destination.offered].map((c) => c.maxDataXferSize ?? DEFAULT_CHUNK);
  const chunkSize = options.chunkSize ?? Math.min(...limits, DEFAULT_CHUNK);
  const result: MigrationResult = { preCopyBytes: 0, stopCopyBytes: 0, chunks: 0, chunkSize, totalMs: 0, downtimeMs: 0, dirtyPages: 0 };
  const count = (): void => {
    result.chunks++;
  };
  let logging = false;
  const report = async (phase: DirtyReport['phase']): Promise<void> => {
    if (!options.dirtyLog) return;
    for (const range of options.dirtyLog.ranges) {
      const pages = await dirtyReport(source, range.iova, range.length, options.dirtyLog.pageSize ?? 4096);
      result.dirtyPages += pages.length;
      step(`dirty report (${phase}) 0x${range.iova.toString(16)}+0x${range.length.toString(16)}: ${pages.length} page(s)`);
      options.onDirty?.({ phase, range, pages });
    }
  };

  const srcFlags = await migrationFlags(source);
  const dstFlags = await migrationFlags(destination);
  if (!(srcFlags & MigrationFlag.STOP_COPY) || !(dstFlags & MigrationFlag.STOP_COPY)) throw new Error('both devices must support STOP_COPY');
  try {
    if (options.dirtyLog) {
      await startDirtyLogging(source, options.dirtyLog.pageSize ?? 4096, options.dirtyLog.ranges);
      logging = true;
      step('source: dirty-page logging started');
    }
    await setMigrationState(destination, MigrationState.RESUMING);
    step('destination: RESUMING');
    if (options.preCopy !== false && srcFlags & MigrationFlag.PRE_COPY) {
      await setMigrationState(source, MigrationState.PRE_COPY);
      step('source: PRE_COPY');
      result.preCopyBytes = await pump(source, destination, chunkSize, count);
      step(`pre-copy: ${result.preCopyBytes} bytes`);
      await report('pre-copy');
    }
    const stopped = performance.now();
    await setMigrationState(source, MigrationState.STOP_COPY);
    step('source: STOP_COPY');
    result.stopCopyBytes = await pump(source, destination, chunkSize, count);
    step(`stop-copy: ${result.stopCopyBytes} bytes`);
    await report('stop-copy');
    if (logging) {
      await stopDirtyLogging(source);
      logging = false;
    }
    await setMigrationState(source, MigrationState.STOP);
    step('source: STOP');
    await setMigrationState(destination, MigrationState.STOP);
    step('destination: STOP (state loaded)');
    if (options.resume !== false) {
      await setMigrationState(destination, MigrationState.RUNNING);
      step('destination: RUNNING');
    }
    result.downtimeMs = performance.now() - stopped;
    result.totalMs = performance.now() - started;
    return result;
  } catch (e) {
    step(`migration failed (${(e as Error).message}): source back to RUNNING`);
    await abortMigration(source).catch(() => undefined);
    if (logging) await stopDirtyLogging(source).catch(() => undefined);
    throw e;
  }
}

/** Abandons a migration on the source: back to RUNNING, state intact. */
export async function abortMigration(source: Client): Promise<void> {
  if ((await getMigrationState(source)) !== MigrationState.RUNNING) await setMigrationState(source, MigrationState.RUNNING);
}
