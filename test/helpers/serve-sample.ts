/**
 * Child-process side of the test server: serves a device on a socket and
 * answers control requests on stdin/stdout, one JSON object per line.
 *
 *   node serve-sample.js <device> <socket> [options-json]
 *
 * <device>: `bench` (the sample) or `testdev` (bench plus BARs whose
 * callbacks fail in chosen ways and a DMA engine). options-json is
 * ServeOptions minus the logger (`limits`, `log`).
 *
 * stdout: first line `{"ready":true,"pid":N}`; then one line per request.
 * stdin requests: `stats` -> {fds, maps, connected, dropped, dmaMaps, irqFds};
 * `exit` -> closes the server and exits 0. EOF on stdin does the same, so a
 * dying test process never leaves a server behind.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { serve, DeviceError, Errno, type DeviceSpec, type ServeOptions } from '../../src/index.js';
import { benchDevice } from '../../src/samples/bench.js';

/** The bench device plus BAR3 (failing callbacks) and BAR4 (a DMA engine). */
function testDevice(): DeviceSpec {
  const base = benchDevice();
  // With MUSER_TEST_HOOKS_THROW=1 every lifecycle hook throws.
  const hookFailures = process.env.MUSER_TEST_HOOKS_THROW === '1';
  let doorbells = 0;
  return {
    ...base,
    name: 'testdev',
    bars: {
      ...base.bars,
      // BAR3: callbacks that fail. Offset selects the failure. Two
      // ioeventfd doorbells: 0x100 whose handler throws, 0x104 (datamatch 5)
      // counting its signals, readable at 0x200.
      3: {
        size: 4096,
        read(offset) {
          if (offset === 0x200) return doorbells;
          return failure(offset) ?? 0x11223344;
        },
        ioeventfds: [
          {
            offset: 0x100,
            size: 4,
            onSignal() {
              throw new Error('doorbell handler fails');
            },
          },
          {
            offset: 0x104,
            size: 4,
            datamatch: 5,
            onSignal(count) {
              doorbells += count;
            },
          },
        ],
        write(offset) {
          const f = failure(offset);
          if (f instanceof Promise) return f.then(() => undefined);
          if (f !== undefined) return;
        },
      },
      // BAR4: a DMA engine. Write 24 bytes {u64 src, u64 dst, u64 len} at
      // 0x00 to copy with dma.read/dma.write (messages where there is no fd),
      // at 0x20 to copy synchronously through zero-copy views.
      4: {
        size: 4096,
        read: () => 0,
        async write(offset, data, device) {
          if (data.length !== 24) throw new DeviceError(Errno.EINVAL, 'DMA engine wants 24 bytes');
          const src = Number(data.readBigUInt64LE(0));
          const dst = Number(data.readBigUInt64LE(8));
          const len = Number(data.readBigUInt64LE(16));
          if (offset === 0x00) {
            const bytes = await device.dma.read(src, len);
            await device.dma.write(dst, bytes);
          } else if (offset === 0x20) {
            const from = device.dma.view(src, len, false);
            const to = device.dma.view(dst, len, true);
            to.set(from);
          } else {
            throw new DeviceError(Errno.EINVAL, 'no such DMA engine register');
          }
        },
      },
    },
    onConnect() {
      if (hookFailures) throw new Error('onConnect hook fails');
    },
    onDisconnect() {
      if (hookFailures) throw new Error('onDisconnect hook fails');
    },
    onReset(reason) {
      if (hookFailures) throw new Error(`onReset(${reason}) hook fails`);
    },
  };
}

/**
 * BAR3 behaviour by offset: 0 throws Error, 4 throws DeviceError(EPERM),
 * 8 returns a rejected Promise(Error), 12 a rejected Promise(DeviceError(EBUSY)),
 * 16 returns bytes of the wrong length, 20 resolves late (50 ms) with a value.
 */
function failure(offset: number): undefined | number | Uint8Array | Promise<number> {
  switch (offset) {
    case 0:
      throw new Error('device callback fails');
    case 4:
      throw new DeviceError(Errno.EPERM, 'device refuses');
    case 8:
      return Promise.reject(new Error('async device callback fails'));
    case 12:
      return Promise.reject(new DeviceError(Errno.EBUSY, 'async device busy'));
    case 16:
      return new Uint8Array(1);
    case 20:
      return new Promise((r) => setTimeout(() => r(0x55667788), 50));
    default:
      return undefined;
  }
}

const [, , name, path, optionsJson] = process.argv;
if (!name || !path) {
  // `node --test dist/test/` also loads this file, without arguments: nothing to serve.
  if (process.env.NODE_TEST_CONTEXT === undefined) process.stderr.write('usage: serve-sample <bench|testdev> <socket> [options-json]\n');
  process.exit(process.env.NODE_TEST_CONTEXT === undefined ? 2 : 0);
}
const options = (optionsJson ? JSON.parse(optionsJson) : {}) as ServeOptions;
const spec = name === 'bench' ? benchDevice() : name === 'testdev' ? testDevice() : undefined;
if (!spec) {
  process.stderr.write(`unknown device ${name}\n`);
  process.exit(2);
}
const server = serve(spec, path, { log: 'silent', ...options });

function stats(): Record<string, unknown> {
  const s = server.session;
  return {
    fds: readdirSync('/proc/self/fd').length,
    maps: readFileSync('/proc/self/maps', 'utf8').split('\n').length,
    connected: s !== undefined,
    dropped: s?.dropped ?? 0,
    dmaMaps: s?.dmaTable.count ?? 0,
    irqFds: server.device.irqs.openFdCount(),
  };
}

function stop(): void {
  server.close();
  process.exit(0);
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'stats') process.stdout.write(JSON.stringify(stats()) + '\n');
  else if (cmd === 'exit') stop();
  else process.stdout.write(JSON.stringify({ error: `unknown request ${cmd}` }) + '\n');
});
rl.on('close', stop);
process.stdout.write(JSON.stringify({ ready: true, pid: process.pid }) + '\n');
