/**
 * DEVICE_FEATURE, MIG_DATA_READ and MIG_DATA_WRITE: live migration and DMA
 * dirty logging. Not served yet: every request is refused with ENOTSUP.
 */
import { DeviceError, Errno } from './errors.js';
import type { Reply } from './dispatch.js';
import type { Request, Session } from './session.js';

/** DEVICE_FEATURE (16). */
export function handleDeviceFeature(_s: Session, _req: Request): Reply {
  throw new DeviceError(Errno.ENOTSUP, 'DEVICE_FEATURE not supported');
}

/** MIG_DATA_READ (17). */
export function handleMigDataRead(_s: Session, _req: Request): Reply {
  throw new DeviceError(Errno.ENOTSUP, 'migration not supported');
}

/** MIG_DATA_WRITE (18). */
export function handleMigDataWrite(_s: Session, _req: Request): Reply {
  throw new DeviceError(Errno.ENOTSUP, 'migration not supported');
}
