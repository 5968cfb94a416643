/**
 * DEVICE_FEATURE, MIG_DATA_READ and MIG_DATA_WRITE: live migration (VFIO
 * migration v2) and DMA dirty-page logging.
 *
 * Features and their operations:
 * - MIGRATION (1): GET -> u64 VFIO_MIGRATION_* flags.
 * - MIG_DEVICE_STATE (2): GET -> current state; SET -> transition (the
 *   reply echoes the request once the transition is complete).
 * - DMA_LOGGING_START (6), SET; DMA_LOGGING_STOP (7), SET;
 *   DMA_LOGGING_REPORT (8), GET -> the bitmap.
 * PROBE answers with the request itself when the feature and every
 * operation named with it exist; an operation a feature lacks is EINVAL,
 * a feature the device lacks ENOTSUP. A GET whose argsz cannot hold the
 * reply is EINVAL.
 */
import { DeviceFeatureFlag, FeatureId, MigrationState } from '../protocol/constants.js';
import { decodeDeviceFeatureRequest, encodeDeviceFeatureReply, featureId, type DeviceFeature } from '../protocol/device-feature.js';
import { decodeMigDataReadRequest, decodeMigDataWriteRequest, encodeMigDataReadReply } from '../protocol/migration-data.js';
import { writeU64 } from '../layout/u64.js';
import { DirtyLog } from '../migration/dirty-log.js';
import { DeviceError, Errno } from '../device/errors.js';
import type { Migration } from '../migration/migration.js';
import type { Reply, Request, SessionContext as Session } from './context.js';

const HEAD = 8;
/** data_fd in MIG_DEVICE_STATE replies: unused in vfio-user, -1 as in VFIO. */
const NO_FD = 0xffffffff;

interface FeatureOps {
  get: boolean;
  set: boolean;
}

/** Operations of a feature this device has, or undefined. */
function opsOf(s: Session, id: number): FeatureOps | undefined {
  const migration = s.migration.migration !== undefined;
  const dma = s.device.spec.dma !== false;
  switch (id) {
    case FeatureId.MIGRATION:
      return migration ? { get: true, set: false } : undefined;
    case FeatureId.MIG_DEVICE_STATE:
      return migration ? { get: true, set: true } : undefined;
    case FeatureId.DMA_LOGGING_START:
    case FeatureId.DMA_LOGGING_STOP:
      return dma ? { get: false, set: true } : undefined;
    case FeatureId.DMA_LOGGING_REPORT:
      return dma ? { get: true, set: false } : undefined;
    default:
      return undefined;
  }
}

function migrationOf(s: Session): Migration {
  const m = s.migration.migration;
  if (!m) throw new DeviceError(Errno.ENOTSUP, `device does not migrate: ${s.migration.unavailable}`);
  return m;
}

function needArgsz(m: DeviceFeature, size: number, what: string): void {
  if (m.argsz < size) throw new DeviceError(Errno.EINVAL, `${what}: argsz ${m.argsz} cannot hold the ${size}-byte reply`);
}

/** DEVICE_FEATURE (16). */
export function handleDeviceFeature(s: Session, req: Request): Reply | Promise<Reply> {
  const m = decodeDeviceFeatureRequest(req.payload);
  const id = featureId(m.flags);
  const get = (m.flags & DeviceFeatureFlag.GET) !== 0;
  const set = (m.flags & DeviceFeatureFlag.SET) !== 0;
  const ops = opsOf(s, id);
  if (!ops) throw new DeviceError(Errno.ENOTSUP, `feature ${id} not supported`);
  if ((get && !ops.get) || (set && !ops.set)) throw new DeviceError(Errno.EINVAL, `feature ${id} has no ${get && !ops.get ? 'GET' : 'SET'}`);
  const echo = (): Reply => ({ payload: Buffer.from(req.payload) });
  if (m.flags & DeviceFeatureFlag.PROBE) return echo();

  switch (id) {
    case FeatureId.MIGRATION: {
      needArgsz(m, HEAD + 8, 'MIGRATION');
      return { payload: encodeDeviceFeatureReply({ argsz: HEAD + 8, flags: m.flags, data: { kind: 'migration', flags: migrationOf(s).flags } }) };
    }
    case FeatureId.MIG_DEVICE_STATE: {
      needArgsz(m, HEAD + 8, 'MIG_DEVICE_STATE');
      const migration = migrationOf(s);
      if (get) {
        return { payload: encodeDeviceFeatureReply({ argsz: HEAD + 8, flags: m.flags, data: { kind: 'mig-state', deviceState: migration.state, dataFd: NO_FD } }) };
      }
      if (m.data.kind !== 'mig-state') throw new DeviceError(Errno.EINVAL, 'MIG_DEVICE_STATE: no state');
      return migration.setState(m.data.deviceState as MigrationState, s).then(echo);
    }
    case FeatureId.DMA_LOGGING_START: {
      if (m.data.kind !== 'dma-logging-start') throw new DeviceError(Errno.EINVAL, 'DMA_LOGGING_START: no control data');
      needArgsz(m, req.payload.length, 'DMA_LOGGING_START');
      const page = s.dirtyLog.start(m.data.pageSize, m.data.ranges);
      const reply = Buffer.from(req.payload);
      writeU64(reply, HEAD, page);
      return { payload: reply };
    }
    case FeatureId.DMA_LOGGING_STOP:
      s.dirtyLog.stop();
      return echo();
    case FeatureId.DMA_LOGGING_REPORT: {
      if (m.data.kind !== 'dma-logging-report') throw new DeviceError(Errno.EINVAL, 'DMA_LOGGING_REPORT: no range');
      const { iova, length, pageSize } = m.data;
      if (pageSize === 0 || length === 0) throw new DeviceError(Errno.EINVAL, 'DMA_LOGGING_REPORT: empty range or page size 0');
      const bytes = DirtyLog.bitmapSize(length, pageSize);
      const size = HEAD + 24 + bytes;
      needArgsz(m, size, 'DMA_LOGGING_REPORT');
      if (bytes > s.limits.maxDataXferSize) throw new DeviceError(Errno.E2BIG, `DMA_LOGGING_REPORT: a ${bytes}-byte bitmap exceeds max_data_xfer_size`);
      const reply = (): Reply => {
        const bitmap = s.dirtyLog.report(iova, length, pageSize);
        return { payload: encodeDeviceFeatureReply({ argsz: size, flags: m.flags, data: { kind: 'dma-logging-bitmap', iova, length, pageSize, bitmap } }) };
      };
      // Writes made on worker threads are recorded first.
      const synced = s.dmaTable.syncWriters();
      return synced ? synced.then(reply) : reply();
    }
    default:
      throw new DeviceError(Errno.ENOTSUP, `feature ${id} not supported`);
  }
}

/** MIG_DATA_READ (17): the next piece of the saving stream. */
export function handleMigDataRead(s: Session, req: Request): Promise<Reply> {
  const m = decodeMigDataReadRequest(req.payload);
  const migration = migrationOf(s);
  if (m.size > s.maxChunk) throw new DeviceError(Errno.EINVAL, `MIG_DATA_READ of ${m.size} bytes exceeds the client's max_data_xfer_size ${s.maxChunk}`);
  if (m.argsz < HEAD + m.size) throw new DeviceError(Errno.EINVAL, `MIG_DATA_READ: argsz ${m.argsz} cannot hold ${m.size} bytes`);
  // Padded to the requested size: libvfio-user's client refuses shorter replies.
  return migration.read(m.size).then((data) => ({
    payload: encodeMigDataReadReply({ argsz: HEAD + data.length, size: data.length, data }, m.size),
  }));
}

/** MIG_DATA_WRITE (18): the next piece of the resuming stream. */
export function handleMigDataWrite(s: Session, req: Request): Promise<Reply> {
  const m = decodeMigDataWriteRequest(req.payload);
  const migration = migrationOf(s);
  if (m.size > s.limits.maxDataXferSize) throw new DeviceError(Errno.EINVAL, `MIG_DATA_WRITE of ${m.size} bytes exceeds max_data_xfer_size ${s.limits.maxDataXferSize}`);
  return migration.write(m.data).then(() => undefined);
}
