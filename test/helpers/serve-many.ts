/**
 * Child-process side of the isolation tests: one process serving several
 * devices, as a multi-VM deployment would, and answering control requests
 * on stdin/stdout, one JSON object per line.
 *
 *   node serve-many.js <dir> <kind>... [--limits=<json>]
 *
 * Device i listens on <dir>/<i>.sock. Kinds:
 *  - `memory`: BAR0 is 4 KiB of shared memory (reads served from it);
 *  - `dma`: BAR0 write of a u64 address at 0x0 copies 16 bytes from it with
 *    dma.read (or through a zero-copy view at 0x8) into BAR0 at 0x100; at
 *    0x10 writes those 16 bytes there with dma.write; errors come back as
 *    the write's error reply;
 *  - `throwing`: every callback it has throws (regions, config hooks,
 *    lifecycle hooks, doorbell, migration).
 *
 * stdout: first line `{"ready":true,"pid":N}`; then one line per request.
 * stdin: `rss` -> {rss} (bytes, after a GC when exposed); `exit`, or EOF.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { serve, type DeviceSpec, type Server } from '../../src/index.js';
import type { ServerLimits } from '../../src/server/session.js';

function memoryDevice(): DeviceSpec {
  return { name: 'memory', identity: { vendorId: 0x1af4, deviceId: 0x10e0, classCode: 0xff0000 }, bars: { 0: { size: 4096, memory: true } } };
}

function dmaDevice(): DeviceSpec {
  const out = Buffer.alloc(16);
  return {
    name: 'dma',
    identity: { vendorId: 0x1af4, deviceId: 0x10e1, classCode: 0xff0000 },
    bars: {
      0: {
        size: 4096,
        read: (offset, length) => (offset === 0x100 && length === 16 ? Buffer.from(out) : 0),
        async write(offset, data, device) {
          const address = Number(data.readBigUInt64LE(0));
          if (offset === 0) out.set(await device.dma.read(address, 16));
          else if (offset === 8) out.set(device.dma.view(address, 16));
          else if (offset === 0x10) await device.dma.write(address, out);
        },
      },
    },
  };
}

function throwingDevice(): DeviceSpec {
  const fail = (): never => {
    throw new Error('this device fails at everything');
  };
  return {
    name: 'throwing',
    identity: { vendorId: 0x1af4, deviceId: 0x10e2, classCode: 0xff0000 },
    bars: {
      0: { size: 4096, read: fail, write: fail, ioeventfds: [{ offset: 0, size: 4, onSignal: fail }] },
      1: { size: 4096, read: () => Promise.reject(new Error('async failure')), write: async () => fail() },
    },
    capabilities: [{ id: 'pcie', flr: true }],
    interrupts: { intx: true, msix: 2 },
    config: { read: fail, write: fail },
    migration: { save: fail, load: fail, onTransition: fail },
    onReset: fail,
    onConnect: fail,
    onDisconnect: fail,
  };
}

const KINDS: Record<string, () => DeviceSpec> = { memory: memoryDevice, dma: dmaDevice, throwing: throwingDevice };

const [dir, ...rest] = process.argv.slice(2);
const limitsArg = rest.find((a) => a.startsWith('--limits='));
const limits = limitsArg ? (JSON.parse(limitsArg.slice('--limits='.length)) as Partial<ServerLimits>) : {};
const servers: Server[] = rest
  .filter((a) => !a.startsWith('--'))
  .map((kind, i) => serve(KINDS[kind]!(), join(dir!, `${i}.sock`), { log: 'silent', limits }));

function rss(): number {
  (globalThis as { gc?: () => void }).gc?.();
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m![1]) * 1024;
}

process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
const shutdown = (): void => {
  for (const s of servers) s.close();
  process.exit(0);
};
createInterface({ input: process.stdin })
  .on('line', (line) => {
    if (line === 'rss') process.stdout.write(`${JSON.stringify({ rss: rss() })}\n`);
    else if (line === 'exit') shutdown();
  })
  .on('close', shutdown);
