/**
 * virtio-blk queues on a worker thread (`virtioBlk({ workers })`): each
 * thread opens its own backend over the shared storage and serves
 * requests with the same rules as the main thread.
 */
import { BlockDevice } from '../block/device.js';
import { openSharedBackend } from '../block/open-shared.js';
import { serveBlkRequest, workerLimits, type BlkWorkerData } from './blk.js';
import type { WorkerQueueHandler } from './worker/handler.js';

/** Called once per worker thread (see {@link QueueWorkerSpec}). */
export async function createQueueHandler(data: BlkWorkerData): Promise<WorkerQueueHandler> {
  const disk = new BlockDevice(await openSharedBackend(data.backend), { readOnly: data.readOnly });
  const limits = workerLimits(data);
  return (req, ctx) => serveBlkRequest(req, ctx, disk, limits);
}
