/**
 * The inflight logs of a worker thread's queues (under --isolate): each is
 * a part of the connection's journal memfd, which this thread maps itself
 * (as it maps guest memory), so that taking and publishing record there
 * without a message to the main thread.
 */
import { native, type MapHandle } from '../../native/index.js';
import { inflightLog } from '../crash-points.js';
import { InflightLog } from '../inflight-log.js';
import type { Virtqueue } from '../virtqueue.js';

const PAGE = 4096;

export class LogMappings {
  private readonly maps = new Map<number, [ArrayBuffer, MapHandle]>();

  /** Attaches the log at `where` to `vq` (no fd: detaches), replacing the mapping it had. */
  attach(vq: Virtqueue, where: { fd?: number; offset?: number; maxSize?: number }): void {
    vq.attachLog(undefined);
    const old = this.maps.get(vq.index);
    if (old) native.munmap(old[1], old[0]);
    this.maps.delete(vq.index);
    if (where.fd === undefined || where.offset === undefined || where.maxSize === undefined) return;
    const bytes = InflightLog.bytes(where.maxSize);
    const start = Math.floor(where.offset / PAGE) * PAGE;
    const m = native.mmap(where.fd, start, where.offset - start + bytes, true);
    if (typeof m === 'number') throw new Error(`queue ${vq.index}: cannot map its inflight log: errno ${-m}`);
    this.maps.set(vq.index, m);
    vq.attachLog(inflightLog(new Uint8Array(m[0], where.offset - start, bytes), where.maxSize));
  }
}
