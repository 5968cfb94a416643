/** Virtio devices over the modern virtio-pci transport. */
export { virtioDevice, virtioTransportOf, virtioQueueStats, type VirtioDeviceSpec, type VirtioQueueSpec, type VirtioQueueStats } from './device.js';
export { VirtioConfig, type ConfigField, type ConfigFieldType, type ConfigValues } from './config.js';
export { VirtqueueRequest, RequestError, type Area, type Descriptor, type IoBuffers } from './request.js';
export { BounceBudget } from './bounce-budget.js';
export { VirtioPciTransport, type QueueHandler, type VirtioContext, type TransportState } from './transport.js';
export { Virtqueue, type RingFeatures, type VirtqueueHost, type VirtqueueState } from './virtqueue.js';
export { dmaQueueMemory, type GuestSpan, type QueueMemory } from '../device/queue-memory.js';
export type { QueueControl } from './queue-control.js';
export type { QueueWorkerSpec, WorkerQueueHandler, WorkerQueueContext } from './worker/handler.js';
export * from './constants.js';
