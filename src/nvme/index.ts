/** An NVMe controller over the shared block layer. */
export { nvmeController, nvmeControllerOf, sqDoorbell, cqDoorbell, NVME_PCI_IDS, type NvmeOptions } from './device.js';
export { NvmeController } from './controller.js';
export type { ControllerHost, ControllerConfig, ControllerStats, DoorbellPage, FeatureValues, FatalReason } from './types.js';
export { AdminOpcode, IoOpcode, Status, StatusType, NvmeReg, FeatureId, LogPageId, Cns, Cc, Csts, status } from './constants.js';
export { CommandError, parseCommand, type NvmeCommand, type CommandResult } from './command.js';
export { Namespace, sliceBackend } from './namespace.js';
export type { ControllerState, SavedCq, SavedSq } from './state.js';
export type { RemoteQueues, RemoteQueueState, SavedPending, DoorbellBuffers, LogPlace } from './remote.js';
