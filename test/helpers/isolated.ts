/**
 * Test-side tools for isolated devices: an IsolatedServer run from the
 * test process (its children are real processes), device files written
 * on the fly, and bounded waits.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IsolatedServer, type IsolateOptions } from '../../src/isolate/index.js';

/** The child entry `muser run --isolate` uses. */
export const CHILD_ENTRY = fileURLToPath(new URL('../../src/cli/run/isolate-child.js', import.meta.url));

/** A fresh temporary directory. */
export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'muser-iso-'));
}

/**
 * A device file (plain JS, no imports): BAR0 offset 0 reads `version`,
 * 4 reads the count and a write adds `step` times the value written,
 * 8 loops forever on a write, 12 kills its process on a write, 16 kills
 * its process on the first write ever (a marker file remembers) and adds 1
 * on later ones. The count lives in `state`, so it is checkpointed.
 */
export function writeDeviceFile(dir: string, opts: { version: number; step?: number; name?: string; extra?: string }): string {
  const file = join(dir, `${opts.name ?? 'iso-dev'}.mjs`);
  const marker = join(dir, 'died-once');
  writeFileSync(
    file,
    `import { existsSync, writeFileSync } from 'node:fs';
export default function () {
  const state = { count: 0 };
  return {
    name: ${JSON.stringify(opts.name ?? 'iso-dev')},
    identity: { vendorId: 0x1234, deviceId: 0x4242, classCode: 0xff0000 },
    state,
    ${opts.extra ?? ''}
    bars: {
      0: {
        size: 4096,
        read(offset) { return offset === 0 ? ${opts.version} : offset === 4 ? state.count : 0; },
        write(offset, data) {
          const v = data.readUInt32LE(0);
          if (offset === 4) state.count = (state.count + v * ${opts.step ?? 1}) >>> 0;
          if (offset === 8) for (;;) {}
          if (offset === 12) process.kill(process.pid, 'SIGKILL');
          if (offset === 16) {
            if (!existsSync(${JSON.stringify(marker)})) { writeFileSync(${JSON.stringify(marker)}, ''); process.kill(process.pid, 'SIGKILL'); }
            state.count = (state.count + 1) >>> 0;
          }
        },
      },
    },
  };
}
`,
  );
  return file;
}

/** Starts an isolated device (sample name or file) on a socket in `dir`. */
export function startIsolated(device: string, dir: string, options: Partial<IsolateOptions> = {}, sock = 'dev.sock'): Promise<IsolatedServer> {
  return IsolatedServer.start({ device, options: {} }, join(dir, sock), { entry: CHILD_ENTRY, log: quiet, ...options });
}

/** Polls `cond` until true; throws after `timeoutMs`. */
export async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A logger that keeps what it is told (tests assert on warnings). */
export const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

/** A 4-byte little-endian value. */
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

/** True while process `pid` exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
