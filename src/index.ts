/**
 * muser: userspace PCI devices in TypeScript, served over vfio-user.
 *
 * @example
 * ```ts
 * import { serve } from 'muser';
 * serve({ identity: { vendorId: 0x1234, deviceId: 0x5678 }, bars: { 0: { size: 4096, memory: true } } }, '/tmp/dev.sock');
 * ```
 */
export { Device, type MsixPlacement } from './server/device.js';
export { Server, serve, DEFAULT_POLL_IDLE_MS, type ServeOptions } from './server/server.js';
export { DeviceError, Errno } from './server/errors.js';
export { IrqIndex, type TriggerResult } from './server/irqs.js';
export type { DmaAccess } from './server/dma-access.js';
export type { Logger, LogLevel } from './server/logger.js';
export { consoleLogger, silentLogger } from './server/logger.js';
export type {
  BarSpec,
  DeviceSpec,
  ExtraRegionSpec,
  InterruptSpec,
  IoEventFdSpec,
  MaybePromise,
  ReadResult,
  RegionSpec,
  ResetReason,
} from './server/spec.js';
export {
  defineRegisters,
  RegisterMap,
  type Register,
  type Register64,
  type RegisterAccess,
  type RegisterBarOptions,
  type RegisterBase,
  type RegisterBlock,
  type RegisterEntry,
  type RegisterMapOptions,
  type RegisterWidth,
} from './server/registers.js';
export { MigrationState, type MigrationData, type MigrationLoader, type MigrationSpec } from './server/migration-spec.js';
export type { Migration, MigrationStats } from './server/migration.js';
export type { GatedDmaAccess, DmaRegionInfo } from './server/migration-dma.js';
export type {
  CapabilityDescription,
  ConfigHooks,
  DsnCapabilityDescription,
  ExtendedCapabilityDescription,
  MsiCapabilityDescription,
  MsixCapabilityDescription,
  PciIdentity,
  PcieCapabilityDescription,
  PmCapabilityDescription,
  VendorCapabilityDescription,
  VsecCapabilityDescription,
} from './pci/index.js';
export {
  BlockDevice,
  BlockError,
  openFileBackend,
  ramBackend,
  SECTOR_SIZE,
  type BlockBackend,
  type BlockCapabilities,
  type BlockDeviceOptions,
  type BlockErrorCode,
  type FileBackend,
  type FileBackendOptions,
  type RamBackend,
  type RamBackendOptions,
} from './block/index.js';
export type { ServerLimits } from './server/session.js';
export type { DmaRegion, DmaSegment } from './server/dma.js';
export {
  virtioDevice,
  VirtioConfig,
  VirtqueueRequest,
  RequestError,
  VirtioFeature,
  VirtioStatus,
  featureBit,
  hasFeature,
  type VirtioDeviceSpec,
  type VirtioQueueSpec,
  type VirtioContext,
  type QueueHandler,
  type ConfigField,
  type ConfigFieldType,
  type ConfigValues,
  type Area,
  type Descriptor,
  type IoBuffers,
  type QueueMemory,
} from './virtio/index.js';
export { virtioBlk, BlkFeature, BlkRequestType, BlkStatus, type VirtioBlkOptions } from './samples/virtio-blk.js';
export { virtioRng } from './samples/virtio-rng.js';
