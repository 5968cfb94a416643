/** The muser vfio-user client library. */
export { Client, ClientError, ReplyTimeout, type ClientOptions, type ReplyFrame, type UnexpectedMessage } from './client.js';
export { ConnectError } from '../transport/connect.js';
export { EventFd } from './eventfd.js';
export { sharedMemory, privateMemory, type GuestMemory } from './guest-memory.js';
export { closeFd, mapRegion, type RegionMapping } from './region-map.js';
export {
  abortMigration,
  bitmapPages,
  dirtyReport,
  getMigrationState,
  migrate,
  migrationFlags,
  readMigrationData,
  setMigrationState,
  startDirtyLogging,
  stopDirtyLogging,
  writeMigrationData,
  MigrationFlag,
  MigrationState,
  type DirtyReport,
  type DmaLoggingRange,
  type MigrateOptions,
  type MigrationResult,
} from './migrate.js';
// Types of the messages the client's methods take and return.
export type { DeviceFeature, FeatureData } from '../protocol/device-feature.js';
export type { DeviceInfo } from '../protocol/device-info.js';
export type { Header } from '../protocol/header.js';
export type { IrqInfo } from '../protocol/irq.js';
export type { RegionCap, RegionInfo, RegionInfoReply, RegionTypeCap, SparseMmapArea, SparseMmapCap } from '../protocol/region-info.js';
export type { RegionIoFdsReply, SubRegionIoFd } from '../protocol/region-io-fds.js';
export type { RegionWriteOne } from '../protocol/region-write-multi.js';
export type { MigrationCapability, TwinSocketCapability, VersionCapabilities } from '../protocol/version.js';
export { Command, DeviceFeatureFlag, DeviceInfoFlag, HeaderFlag, IoeventfdFlag, IoFdType, IrqSetFlag, RegionCapId, RegionInfoFlag } from '../protocol/constants.js';
