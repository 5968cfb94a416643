/**
 * virtio-rng (virtio 1.2, 5.4), the smallest virtio device: one queue whose
 * device-writable buffers it fills with random bytes. A guest's
 * /dev/hwrng reads from it. Run it: `npx muser run virtio-rng /tmp/rng.sock`.
 */
import { randomFillSync } from 'node:crypto';
import type { DeviceSpec } from '../server/spec.js';
import { virtioDevice } from '../virtio/device.js';

/** The virtio device type of an entropy source. */
export const VIRTIO_RNG_TYPE = 4;

/** Most bytes given per request: a driver asking for more gets this many. */
const MAX_PER_REQUEST = 64 * 1024;

/** A virtio entropy device. */
export function virtioRng(options: { queueSize?: number } = {}): DeviceSpec {
  return virtioDevice({
    name: 'virtio-rng',
    type: VIRTIO_RNG_TYPE,
    queues: [
      {
        size: options.queueSize ?? 64,
        async handle(req) {
          const n = Math.min(req.writableLength, MAX_PER_REQUEST);
          const io = await req.buffers('writable', 0, n);
          for (const b of io.buffers) randomFillSync(b);
          await io.finish(true);
          return n;
        },
      },
    ],
  });
}
