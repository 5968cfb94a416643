/**
 * A virtio test device (type 0x3f, unassigned) with two queues and a
 * small config:
 *   queue 0 echoes: copies the readable area into the writable one through
 *     pinned zero-copy views (bounce buffers without fds), completes with
 *     the bytes written; any fault completes with 0.
 *   queue 1 holds: each request waits until the test releases it (in any
 *     order), its writable views pinned meanwhile; then it writes the head
 *     index as a u32 and completes.
 */
import { virtioDevice, type VirtqueueRequest } from '../../src/virtio/index.js';
import type { DeviceSpec } from '../../src/index.js';

export const ECHO_TYPE = 0x3f;

/** Requests held by queue 1, by head. */
export class HeldRequests {
  readonly held = new Map<number, () => void>();
  private waiters: (() => void)[] = [];

  add(head: number, release: () => void): void {
    this.held.set(head, release);
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once `n` requests are held. */
  async waitFor(n: number): Promise<void> {
    while (this.held.size < n) await new Promise<void>((r) => this.waiters.push(r));
  }

  release(head: number): void {
    const r = this.held.get(head);
    if (!r) throw new Error(`head ${head} is not held`);
    this.held.delete(head);
    r();
  }
}

export interface EchoDevice {
  spec: DeviceSpec;
  held: HeldRequests;
  resets: number;
}

export function echoDevice(options: { queueSize?: number; indirectDesc?: boolean; eventIdx?: boolean } = {}): EchoDevice {
  const held = new HeldRequests();
  const out: EchoDevice = { spec: undefined as unknown as DeviceSpec, held, resets: 0 };
  out.spec = virtioDevice({
    name: 'virtio-echo',
    type: ECHO_TYPE,
    features: 1n << 0n,
    indirectDesc: options.indirectDesc,
    eventIdx: options.eventIdx,
    config: [
      { name: 'magic', type: 'u32' },
      { name: 'knob', type: 'u16', writable: true },
      { name: 'pad', type: { pad: 2 } },
      { name: 'big', type: 'u64' },
    ],
    configValues: { magic: 0x76697274, big: 0x1122334455667788n },
    queues: [
      { size: options.queueSize ?? 64, handle: echo },
      { size: options.queueSize ?? 64, handle: (req) => hold(req, held) },
    ],
    onReset: () => {
      out.resets++;
    },
  });
  return out;
}

async function echo(req: VirtqueueRequest): Promise<number> {
  const n = Math.min(req.readableLength, req.writableLength);
  try {
    const src = await req.buffers('readable', 0, n);
    const dst = await req.buffers('writable', 0, n);
    const data = Buffer.concat(src.buffers);
    let at = 0;
    for (const b of dst.buffers) {
      b.set(data.subarray(at, at + b.length));
      at += b.length;
    }
    await src.finish(false);
    await dst.finish(true);
    return n;
  } catch {
    return 0;
  }
}

async function hold(req: VirtqueueRequest, held: HeldRequests): Promise<number> {
  if (req.writableLength < 4) return 0;
  const io = await req.buffers('writable', 0, 4);
  await new Promise<void>((resolve) => held.add(req.head, resolve));
  const v = Buffer.alloc(4);
  v.writeUInt32LE(req.head);
  let at = 0;
  for (const b of io.buffers) {
    b.set(v.subarray(at, at + b.length));
    at += b.length;
  }
  await io.finish(true);
  return 4;
}
