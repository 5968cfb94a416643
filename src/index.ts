/**
 * muser: userspace PCI devices in TypeScript, served over vfio-user.
 *
 * @example
 * ```ts
 * import { serve } from 'muser';
 * serve({ identity: { vendorId: 0x1234, deviceId: 0x5678 }, bars: { 0: { size: 4096, memory: true } } }, '/tmp/dev.sock');
 * ```
 */
export { Device, type MsixPlacement } from './device/device.js';
export { Server, serve, DEFAULT_POLL_IDLE_MS, type ServeOptions } from './server/server.js';
export {
  startDeviceProgram,
  DeviceProgram,
  programCommand,
  ProgramStartError,
  DEFAULT_PROGRAM_TIMEOUT_MS,
  PROGRAM_PROTOCOL_VERSION,
  type DeviceProgramOptions,
} from './program/index.js';
export { DeviceError, Errno } from './device/errors.js';
export { IrqIndex, type TriggerResult } from './device/irqs.js';
export type { DmaAccess } from './device/dma-access.js';
export type { Logger, LogLevel } from './device/logger.js';
export { consoleLogger, silentLogger } from './device/logger.js';
export type {
  BarSpec,
  DeviceSpec,
  ExtraRegionSpec,
  InterruptSpec,
  IoEventFdSpec,
  DoorbellWorkerSpec,
  MaybePromise,
  ReadResult,
  RegionSpec,
  ResetReason,
} from './device/spec.js';
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
  type RegisterValues,
  type RegisterWidth,
  type RegisterWindow,
} from './device/registers.js';
export { PersistentBlock, MAX_AREA_NAME, type PersistentMemory } from './device/persistent.js';
export { deviceTimer, DeviceTimer, type DeviceTimerOptions } from './device/timer.js';
export { memoryWatch, MemoryWatch, type MemoryWatchOptions } from './device/memory-watch.js';
export { formatUnmodeled, MAX_UNMODELED_PLACES, type UnmodeledAccess, type UnmodeledAccesses, type UnmodeledReport } from './device/unmodeled.js';
export { mayInterrupt } from './migration/fsm.js';
export type { MigrationOffer } from './migration/offer.js';
export { MigrationState, type MigrationData, type MigrationLoader, type MigrationSpec } from './device/migration-spec.js';
export type { Migration, MigrationStats } from './migration/migration.js';
export type { GatedDmaAccess, DmaRegionInfo } from './device/gated-dma.js';
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
export * from './block/index.js';
export type { ServerLimits } from './server/session.js';
export type { DmaRegion, DmaSegment, DmaTableObserver } from './device/dma.js';
export type { DoorbellHandler, DoorbellContext } from './device/threads/doorbell.js';
export {
  virtioDevice,
  virtioQueueStats,
  type VirtioQueueStats,
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
  type GuestSpan,
  type QueueMemory,
  type QueueWorkerSpec,
  type WorkerQueueHandler,
  type WorkerQueueContext,
} from './virtio/index.js';
export { virtioBlk, BlkFeature, BlkRequestType, BlkStatus, type VirtioBlkOptions, type BlkLimits, type BlkWorkerData } from './virtio/blk.js';
export { virtioRng } from './virtio/rng.js';
export {
  nvmeController,
  nvmeControllerOf,
  sliceBackend,
  NvmeController,
  NVME_PCI_IDS,
  Status as NvmeStatus,
  type NvmeOptions,
  type ControllerHost as NvmeControllerHost,
  type DoorbellPage as NvmeDoorbellPage,
  type ControllerConfig as NvmeControllerConfig,
  type ControllerStats as NvmeControllerStats,
  type FeatureValues as NvmeFeatureValues,
  type FatalReason as NvmeFatalReason,
  type ControllerState as NvmeControllerState,
  type SavedCq as NvmeSavedCq,
  type SavedSq as NvmeSavedSq,
  type RemoteQueues as NvmeRemoteQueues,
  type RemoteQueueState as NvmeRemoteQueueState,
  type SavedPending as NvmeSavedPending,
  type DoorbellBuffers as NvmeDoorbellBuffers,
  type LogPlace as NvmeLogPlace,
} from './nvme/index.js';
