/** The muser vfio-user client library. */
export { Client, ClientError, type ClientOptions, type ReplyFrame } from './client.js';
export { EventFd } from './eventfd.js';
export { sharedMemory, privateMemory, type GuestMemory } from './guest-memory.js';
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
