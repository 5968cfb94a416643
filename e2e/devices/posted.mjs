// @ts-check
/**
 * e2e/devices/posted.mjs SOCKET - the harness's own device for posted
 * writes: one 4 KiB memory BAR that is NOT mappable, so QEMU forwards every
 * guest write as a message and may post it (QEMU posts writes only for
 * devices without any mmappable region). Once its outgoing queue passes
 * 1024 messages QEMU coalesces posted writes into REGION_WRITE_MULTI; the
 * harness provokes that by stopping this process while the guest writes.
 *
 * BAR 0: a 32-bit write at 0x8 counts; the device checks that the values
 * arrive in order (each one the previous + 1). Reads: 0x0 count of writes,
 * 0x4 1 while every write came in order, 0xc the last value.
 * Ids 4d55:0e2e. Logs `posted: ...` lines on stderr.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { serve } = await import(join(REPO, 'dist/src/index.js'));

const path = process.argv[2];
if (!path) {
  console.error('usage: posted.mjs SOCKET');
  process.exit(2);
}
let count = 0;
let inOrder = 1;
let last = -1;
const server = serve(
  {
    name: 'posted',
    identity: { vendorId: 0x4d55, deviceId: 0x0e2e, classCode: 0xff0000 },
    bars: {
      0: {
        size: 4096,
        read(/** @type {number} */ offset) {
          const v = offset === 0 ? count : offset === 4 ? inOrder : offset === 0xc ? last >>> 0 : 0;
          if (offset === 0) console.error(`posted: read count=${count} inorder=${inOrder} last=${last}`);
          return v;
        },
        write(/** @type {number} */ offset, /** @type {Buffer} */ data) {
          if (offset !== 8 || data.length !== 4) return;
          const v = data.readUInt32LE(0);
          if (last >= 0 && v !== ((last + 1) >>> 0)) inOrder = 0;
          last = v;
          count++;
        },
      },
    },
    interrupts: { intx: true },
    onReset() {
      count = 0;
      inOrder = 1;
      last = -1;
    },
  },
  path,
  { log: 'info' },
);
console.error(`posted: serving on ${path}`);
const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
