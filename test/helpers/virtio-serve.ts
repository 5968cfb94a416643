/**
 * Child-process side of the cross-process virtio tests: serves a virtio
 * device on a socket until stdin says `exit` or closes.
 *
 *   node virtio-serve.js <blk|rng|nvme> <socket> [options-json]
 *
 * blk and nvme options: { size, queues, readOnly } over a RAM disk; blk also
 * over an existing image file shared with other processes with { file }, and
 * with its queues on worker threads with { workers } (then a memfd RAM disk).
 * { mmapDoorbells } maps and watches the doorbells; { poll } serves with --poll.
 * stdout: `{"ready":true}` once listening; `stats` answers {fds, connected}.
 */
import { readdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { nvmeController, serve, virtioBlk, type DeviceSpec } from '../../src/index.js';
import { virtioRng } from '../../src/virtio/rng.js';
import { memfdBackend, openFileBackend, ramBackend } from '../../src/block/index.js';

const [, , kind, path, json] = process.argv;
if (!kind || !path) {
  // `node --test dist/test/` may load this file without arguments: nothing to serve.
  process.exit(process.env.NODE_TEST_CONTEXT === undefined ? 2 : 0);
}
const o = (json ? JSON.parse(json) : {}) as { size?: number; queues?: number; readOnly?: boolean; file?: string; workers?: number; mmapDoorbells?: boolean; poll?: boolean };
let spec: DeviceSpec;
const size = o.size ?? 1024 * 1024;
if (kind === 'blk') {
  const backend = o.file ? await openFileBackend(o.file) : o.workers ? memfdBackend(size) : ramBackend(size);
  spec = virtioBlk({ backend, queues: o.queues, readOnly: o.readOnly, serial: 'child', workers: o.workers, mmapDoorbells: o.mmapDoorbells });
}
else if (kind === 'rng') spec = virtioRng();
else if (kind === 'nvme') spec = nvmeController({ namespaces: [ramBackend(size)], queues: o.queues, readOnly: o.readOnly, serial: 'child', mmapDoorbells: o.mmapDoorbells });
else {
  process.stderr.write(`unknown device ${kind}\n`);
  process.exit(2);
}
const server = serve(spec, path, { log: 'silent', poll: o.poll });
const stop = (): void => {
  server.close();
  process.exit(0);
};
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() === 'exit') stop();
  else if (line.trim() === 'stats') process.stdout.write(JSON.stringify({ fds: readdirSync('/proc/self/fd').length, connected: server.session !== undefined }) + '\n');
});
rl.on('close', stop);
process.stdout.write(JSON.stringify({ ready: true }) + '\n');
