/** Block storage shared by the disk devices (virtio-blk, NVMe, NBD); the package's index.ts re-exports all of it, so what is here is public. */
export { BlockError, type BlockBackend, type BlockCapabilities, type BlockErrorCode } from './backend.js';
export { BlockDevice, type BlockDeviceOptions, type BlockOperation } from './device.js';
export { ramBackend, type RamBackend, type RamBackendOptions } from './ram.js';
export { memfdBackend, type MemfdBackendOptions } from './memfd.js';
export { isShareable, type SharedBackend, type ShareableBackend } from './shared.js';
export { openSharedBackend } from './open-shared.js';
export { openFileBackend, type FileBackend, type FileBackendOptions } from './file.js';
export { SECTOR_SIZE } from './checks.js';
export {
  openNbdBackend,
  parseNbdUri,
  formatNbdAddress,
  NbdConnectError,
  NbdUriError,
  type NbdAddress,
  type NbdBackend,
  type NbdBackendOptions,
  type NbdFailure,
  type NbdReconnectOptions,
} from './nbd/index.js';
