import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Client } from '../src/client/client.js';
import { serve, type DeviceSpec, type Server } from '../src/index.js';
import {
  collectSnapshot,
  decodeLspci,
  formatLspci,
  lspci,
  lspciData,
  walkExtended,
  walkStandard,
} from '../src/cli/lspci/index.js';
import { MAIN, runCli } from './helpers/timer-process.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-lspci-'));
let seq = 0;
const sockPath = (): string => join(dir, `dev${seq++}.sock`);

/** A device with every kind of BAR and capability lspci decodes. */
function fullSpec(): DeviceSpec {
  return {
    name: 'lspci-test',
    identity: { vendorId: 0x1af4, deviceId: 0x10f0, subsystemVendorId: 0x1af4, subsystemId: 0x1100, classCode: 0x020000, revision: 2 },
    bars: {
      0: { size: 4096 },
      1: { size: 1 << 20, is64: true, prefetchable: true },
      3: { size: 256, kind: 'io' },
    },
    capabilities: [{ id: 'pm' }, { id: 'pcie' }, { id: 'vendor', data: Uint8Array.from([1, 2, 3, 4, 5]) }],
    extendedCapabilities: [
      { id: 'dsn', serial: 0x0102030405060708n },
      { id: 'vendor', vsecId: 0x1234, revision: 1, data: new Uint8Array(8) },
    ],
    interrupts: { intx: true, msi: 4, msix: 3 },
  };
}

const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

describe('lspci against an in-process device', () => {
  let server: Server;
  let path: string;
  let text: string;
  const capAt = (id: string, chain: 'standard' | 'extended' = 'standard'): number =>
    server.device.config.capabilities.find((c) => c.id === id && c.chain === chain)!.offset;

  before(async () => {
    path = sockPath();
    server = serve(fullSpec(), path, { log: 'error' });
    text = await lspci(path);
  });
  after(() => server.close());

  it('prints identity, command, status and interrupt lines', () => {
    const lines = text.split('\n');
    assert.equal(lines[0], '00:00.0 Ethernet controller [0200]: Device 1af4:10f0 (rev 02)');
    assert.equal(lines[1], '\tSubsystem: Device 1af4:1100');
    assert.match(lines[2]!, /^\tControl: I\/O- Mem- BusMaster- SpecCycle- .* DisINTx-$/);
    assert.match(lines[3]!, /^\tStatus: Cap\+ 66MHz- .* DEVSEL=fast .* INTx-$/);
    assert.equal(lines[4], '\tInterrupt: pin A');
  });

  it('prints one line per implemented BAR with sizes', () => {
    const regions = text.split('\n').filter((l) => l.startsWith('\tRegion'));
    assert.deepEqual(regions, [
      '\tRegion 0: Memory at <unassigned> (32-bit, non-prefetchable) [disabled] [size=4K]',
      '\tRegion 1: Memory at <unassigned> (64-bit, prefetchable) [disabled] [size=1M]',
      '\tRegion 3: I/O ports at <unassigned> [disabled] [size=256]',
      '\tRegion 4: Memory at <unassigned> (32-bit, non-prefetchable) [disabled] [size=4K]',
    ]);
    assert.doesNotMatch(text, /Warning/);
  });

  it('decodes every capability', () => {
    const expect = [
      `\tCapabilities: [${hex2(capAt('pm'))}] Power Management version 3`,
      `\tCapabilities: [${hex2(capAt('msi'))}] MSI: Enable- Count=1/4 Maskable+ 64bit+`,
      '\t\tAddress: 0000000000000000  Data: 0000',
      `\tCapabilities: [${hex2(capAt('msix'))}] MSI-X: Enable- Count=3 Masked-`,
      '\t\tVector table: BAR=4 offset=00000000',
      '\t\tPBA: BAR=4 offset=00000030',
      `\tCapabilities: [${hex2(capAt('pcie'))}] Express (v2) Endpoint, MSI 00`,
      `\tCapabilities: [${hex2(capAt('vendor'))}] Vendor Specific Information: Len=08`,
      '\tCapabilities: [100 v1] Device Serial Number 01-02-03-04-05-06-07-08',
      `\tCapabilities: [${capAt('vendor', 'extended').toString(16)} v1] Vendor Specific Information: ID=1234 Rev=1 Len=010`,
    ];
    const lines = text.split('\n');
    for (const l of expect) assert.ok(lines.includes(l), `missing line ${JSON.stringify(l)} in\n${text}`);
  });

  it('returns the same facts as data', async () => {
    const d = await lspciData(path);
    assert.deepEqual(
      [d.vendorId, d.deviceId, d.subsystemVendorId, d.subsystemId, d.classCode, d.revision, d.configSize],
      [0x1af4, 0x10f0, 0x1af4, 0x1100, 0x020000, 2, 4096],
    );
    assert.deepEqual(
      d.bars.map((b) => [b.index, b.kind, b.is64, b.prefetchable, b.size, b.regionSize]),
      [
        [0, 'memory', false, false, 4096, 4096],
        [1, 'memory', true, true, 1 << 20, 1 << 20],
        [3, 'io', false, false, 256, 256],
        [4, 'memory', false, false, 4096, 4096],
      ],
    );
    const model = server.device.config.capabilities;
    const strip = (chain: string): [number, number][] => model.filter((c) => c.chain === chain).map((c) => [c.offset, c.capId]);
    assert.deepEqual(d.capabilities.map((c) => [c.offset, c.id]).sort((a, b) => a[0]! - b[0]!), strip('standard').sort((a, b) => a[0]! - b[0]!));
    assert.deepEqual(d.extendedCapabilities.map((c) => [c.offset, c.id]), strip('extended'));
    assert.deepEqual(d.capabilities.map((c) => c.name).sort(), ['Express', 'MSI', 'MSI-X', 'Power Management', 'Vendor Specific Information']);
    assert.deepEqual(d.extendedCapabilities.map((c) => [c.name, c.version]), [['Device Serial Number', 1], ['Vendor Specific Information', 1]]);
    assert.deepEqual(d.notes, []);
  });

  it('leaves BARs and the command register as they were after sizing', async () => {
    const client = await Client.connect(path);
    try {
      const w32 = (off: number, v: number): Promise<void> => client.regionWrite(7, off, Buffer.from(new Uint32Array([v >>> 0]).buffer));
      await w32(0x10, 0xfebf0000);
      await w32(0x14, 0x00000000);
      await w32(0x18, 0x00000008);
      await w32(0x1c, 0x0000c001);
      await w32(0x20, 0xfebf1000);
      await client.regionWrite(7, 0x04, Buffer.from([0x03, 0x00]));
      const before = await client.regionRead(7, 0x04, 0x24);
      const snap = await collectSnapshot(client);
      const afterSizing = await client.regionRead(7, 0x04, 0x24);
      assert.deepEqual(afterSizing, before);
      assert.deepEqual(snap.config.subarray(0x04, 0x28), before);
      const out = formatLspci(snap);
      assert.match(out, /\tRegion 0: Memory at febf0000 \(32-bit, non-prefetchable\) \[size=4K\]\n/);
      assert.match(out, /\tRegion 1: Memory at 800000000 \(64-bit, prefetchable\) \[size=1M\]\n/);
      assert.match(out, /\tRegion 3: I\/O ports at c000 \[size=256\]\n/);
      assert.match(out, /\tControl: I\/O\+ Mem\+ BusMaster- /);
      assert.equal(decodeLspci(snap).bars[1]!.address, 0x800000000n);
    } finally {
      client.close();
    }
  });

  it('prints JSON with --json semantics', async () => {
    const parsed = JSON.parse(await lspci(path, { json: true })) as { vendorId: number; bars: { address: string }[] };
    assert.equal(parsed.vendorId, 0x1af4);
    assert.equal(parsed.bars[0]!.address, '0x0');
  });
});

describe('lspci flags a BAR that disagrees with its region', () => {
  it('reports the VFIO region size next to the BAR size', async () => {
    const path = sockPath();
    let sizing = false;
    const spec: DeviceSpec = {
      identity: { vendorId: 0x4d55, deviceId: 0x0002 },
      bars: { 0: { size: 4096 } },
      config: {
        write(offset, data) {
          if (offset === 0x10 && data.length === 4) sizing = data.readUInt32LE(0) === 0xffffffff;
          return false;
        },
        read: (offset, length) => (sizing && offset === 0x10 && length === 4 ? Buffer.from([0x00, 0xe0, 0xff, 0xff]) : undefined),
      },
    };
    const server = serve(spec, path, { log: 'error' });
    try {
      const text = await lspci(path);
      assert.match(text, /\tRegion 0: Memory at <unassigned> \(32-bit, non-prefetchable\) \[disabled\] \[size=8K\] \[VFIO region size=4K disagrees\]\n/);
      assert.match(text, /\tWarning: Region 0: BAR decodes 8K but VFIO region 0 has size 4K\n/);
    } finally {
      server.close();
    }
  });
});

describe('capability chain walking is defensive', () => {
  /** A 4096-byte config space with Cap+ and the given standard links [offset, id, next]. */
  function image(links: [number, number, number][], first: number): Buffer {
    const c = Buffer.alloc(4096);
    c.writeUInt16LE(0x0010, 0x06);
    c[0x34] = first;
    for (const [off, id, next] of links) {
      c[off] = id;
      c[off + 1] = next;
    }
    return c;
  }

  it('stops on a loop', () => {
    const r = walkStandard(image([[0x40, 1, 0x50], [0x50, 5, 0x40]], 0x40));
    assert.deepEqual(r.entries.map((e) => e.offset), [0x40, 0x50]);
    assert.match(r.notes[0]!, /loops back/);
  });

  it('stops on a pointer into the header or an unaligned pointer', () => {
    assert.match(walkStandard(image([[0x40, 1, 0x20]], 0x40)).notes[0]!, /outside/);
    const r = walkStandard(image([[0x40, 1, 0x52]], 0x40));
    assert.equal(r.entries.length, 1);
    assert.match(r.notes[0]!, /not dword-aligned/);
    assert.match(walkStandard(image([], 0x08)).notes[0]!, /outside/);
  });

  it('ignores the pointer without Cap+ and walks 48 capabilities at most', () => {
    const c = image([[0x40, 1, 0]], 0x40);
    c.writeUInt16LE(0, 0x06);
    assert.deepEqual(walkStandard(c), { entries: [], notes: [] });
    const ext = Buffer.alloc(4096);
    for (let i = 0; i < 60; i++) ext.writeUInt32LE((0x104 + 4 * i) * 2 ** 20 + (1 << 16) + 0x0b, 0x100 + 4 * i);
    const r = walkExtended(ext);
    assert.equal(r.entries.length, 48);
    assert.match(r.notes[0]!, /more than 48/);
  });

  it('stops the extended chain on a pointer below 0x100 or a loop', () => {
    const c = Buffer.alloc(4096);
    c.writeUInt32LE((0x80 << 20) | (1 << 16) | 3, 0x100);
    assert.match(walkExtended(c).notes[0]!, /outside/);
    c.writeUInt32LE((0x100 << 20) | (1 << 16) | 3, 0x100);
    const r = walkExtended(c);
    assert.equal(r.entries.length, 1);
    assert.match(r.notes[0]!, /loops back/);
    assert.deepEqual(walkExtended(Buffer.alloc(256)), { entries: [], notes: [] });
  });
});

describe('muser lspci (CLI)', () => {
  let child: ChildProcess | undefined;
  after(() => {
    if (child && child.exitCode === null) child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints the bench sample served by `muser run bench`', async () => {
    const path = sockPath();
    child = spawn(process.execPath, [MAIN, 'run', 'bench', path], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((ok, fail) => {
      let err = '';
      child!.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('serving')) ok();
      });
      child!.once('exit', (code) => fail(new Error(`muser run exited ${code}: ${err}`)));
    });
    const result = await runCli(['lspci', path]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^00:00\.0 .*Device 4d55:0001 \(rev 00\)\n/);
    assert.match(result.stdout, /\tCapabilities: \[[0-9a-f]{2}\] MSI-X: Enable- Count=1 Masked-\n/);
    const exited = new Promise((ok) => child!.once('exit', ok));
    child.kill('SIGTERM');
    await exited;
  });
});
