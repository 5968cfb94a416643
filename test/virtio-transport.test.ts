/**
 * The virtio-pci transport and split virtqueues, driven by our own client
 * acting as the virtio driver against a test device served in-process.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import { Client, EventFd } from '../src/client/index.js';
import { IrqIndex, serve, type Logger, type Server } from '../src/index.js';
import { registerMapOf } from '../src/device/registers.js';
import { CommonCfg, DescFlag, VirtioFeature, VirtioStatus, VIRTIO_MSI_NO_VECTOR, featureBit, virtioTransportOf } from '../src/virtio/index.js';
import { connectClient } from './helpers/raw.js';
import { ECHO_TYPE, echoDevice, type EchoDevice } from './helpers/virtio-echo.js';
import { GUEST_BASE, VirtioDriver, only, without } from './helpers/virtio-driver.js';
import { waitUntil } from './helpers/slow-backend.js';
import { recordingLogger } from './helpers/logs.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-virtio-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

const OK_STATUS = VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK;

interface Rig {
  echo: EchoDevice;
  server: Server;
  client: Client;
  driver: VirtioDriver;
}

async function rig(options: Parameters<typeof echoDevice>[0] & { memory?: 'shared' | 'private'; msix?: boolean; log?: Logger } = {}): Promise<Rig> {
  const echo = echoDevice(options);
  const server = serve(echo.spec, join(dir, `echo${serial++}.sock`), { log: options.log ?? 'silent' });
  const client = await connectClient(server.path);
  const driver = await VirtioDriver.open(client, { memory: options.memory, msix: options.msix });
  return { echo, server, client, driver };
}

function close(r: Rig | undefined): void {
  if (!r) return;
  r.driver.close();
  r.client.close();
  r.server.close();
}

/** Echoes `text` through queue 0 and returns what came back. */
async function echoOnce(d: VirtioDriver, text: string, options: { indirect?: boolean; kick?: 'message' | 'posted' | 'eventfd' } = {}): Promise<string> {
  const src = d.put(Buffer.from(text));
  const dst = d.alloc(text.length);
  const used = await d.roundTrip(0, [{ addr: src, len: text.length }, { addr: dst, len: text.length, write: true }], options);
  assert.equal(used.len, text.length);
  return Buffer.from(d.bytes(dst, text.length)).toString();
}

/** Waits until the device shows DEVICE_NEEDS_RESET, and checks the config vector fired. */
async function expectNeedsReset(r: Rig, configSeen: number): Promise<void> {
  await r.driver.vectors[0].waitFor(configSeen + 1);
  const status = await r.driver.status();
  assert.ok(status & VirtioStatus.DEVICE_NEEDS_RESET, `status 0x${status.toString(16)}`);
}

/** After a broken ring: reset, set up again, and the device works. */
async function recovers(r: Rig): Promise<void> {
  await r.driver.setStatus(0);
  assert.equal(await r.driver.status(), 0);
  await r.driver.start(2);
  assert.equal(await echoOnce(r.driver, 'alive again'), 'alive again');
}

describe('virtio-pci identity and capabilities', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('vendor 0x1af4, device 0x1040 + type, revision 1, subsystem >= 0x40, five vendor caps', async () => {
    r = await rig();
    const cfg = await r.client.regionRead(7, 0, 64);
    assert.equal(cfg.readUInt16LE(0), 0x1af4);
    assert.equal(cfg.readUInt16LE(2), 0x1040 + ECHO_TYPE);
    assert.equal(cfg[8], 1);
    assert.ok(cfg.readUInt16LE(0x2e) >= 0x40);
    const caps = r.driver.caps;
    assert.deepEqual([caps.common, caps.isr, caps.device, caps.notify, caps.notifyMultiplier], [0, 0x1000, 0x2000, 0x3000, 4]);
    assert.equal(await r.driver.readCommon(CommonCfg.NUM_QUEUES, 2), 2);
  });

  test('the PCI config access capability reads and writes the BAR', async () => {
    r = await rig();
    const at = r.driver.caps.pciCfg;
    const setWindow = async (offset: number, length: number): Promise<void> => {
      await r!.client.regionWrite(7, at + 4, Buffer.from([0]));
      const b = Buffer.alloc(8);
      b.writeUInt32LE(offset, 0);
      b.writeUInt32LE(length, 4);
      await r!.client.regionWrite(7, at + 8, b.subarray(0, 4));
      await r!.client.regionWrite(7, at + 12, b.subarray(4));
    };
    await setWindow(CommonCfg.NUM_QUEUES, 2);
    assert.equal((await r.client.regionRead(7, at + 16, 4)).readUInt16LE(0), 2);
    assert.equal((await r.client.regionRead(7, at + 12, 4)).readUInt32LE(0), 2, 'the window fields read back');
    // Write the device status through the window.
    await setWindow(CommonCfg.DEVICE_STATUS, 1);
    await r.client.regionWrite(7, at + 16, Buffer.from([VirtioStatus.ACKNOWLEDGE]));
    assert.equal(await r.driver.status(), VirtioStatus.ACKNOWLEDGE);
  });

  test('a device change of its config bumps config_generation and raises the config vector', async () => {
    r = await rig();
    await r.driver.start(2);
    const gen = await r.driver.readCommon(CommonCfg.CONFIG_GENERATION, 1);
    const seen = r.driver.vectors[0].total;
    virtioTransportOf(r.echo.spec)!.config.set('magic', 0x12345678);
    await r.driver.vectors[0].waitFor(seen + 1);
    assert.equal(await r.driver.readCommon(CommonCfg.CONFIG_GENERATION, 1), (gen + 1) & 0xff);
    assert.equal((await r.driver.readConfig(0, 4)).readUInt32LE(0), 0x12345678);
  });

  test('device config: declared fields read back; writable fields take writes, others do not', async () => {
    r = await rig();
    assert.equal((await r.driver.readConfig(0, 4)).readUInt32LE(0), 0x76697274);
    assert.equal((await r.driver.readConfig(8, 8)).readBigUInt64LE(0), 0x1122334455667788n);
    await r.client.regionWrite(0, 0x2004, Buffer.from([0x34, 0x12]));
    await r.client.regionWrite(0, 0x2000, Buffer.from([1, 2, 3, 4]));
    assert.equal((await r.driver.readConfig(4, 2)).readUInt16LE(0), 0x1234);
    assert.equal((await r.driver.readConfig(0, 4)).readUInt32LE(0), 0x76697274);
  });
});

describe('the virtio BAR as a register table', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('the transport registers are the table\'s stored values: read by name, traced by name, reset with the device', async () => {
    r = await rig();
    const map = registerMapOf(r.echo.spec.bars?.[0]);
    assert.ok(map, 'BAR0 is served by a register map');
    const lines: string[] = [];
    const keep = (m: string): void => void lines.push(m);
    map.traceTo({ debug: keep, info: keep, warn: keep, error: keep } satisfies Logger);
    await r.driver.negotiate();
    assert.equal(map.get('device_status'), VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK);
    await r.driver.writeCommon(CommonCfg.QUEUE_SELECT, 2, 1);
    assert.equal(map.get('queue_select'), 1);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_NOTIFY_OFF, 2), 1);
    assert.ok(lines.includes('write reg=0x16 name=queue_select val=0x0001'), lines.join('\n'));
    assert.ok(lines.includes('read reg=0x1e name=queue_notify_off val=0x0001'), 'a field of the selected queue, by name');
    assert.ok(lines.some((l) => /^read reg=0x4 name=device_feature val=0x/.test(l)), 'the feature window, by name');
    map.set('config_generation', 7);
    assert.equal(await r.driver.readCommon(CommonCfg.CONFIG_GENERATION, 1), 7, 'reads come from the stored value');
    await r.client.reset();
    assert.deepEqual([map.get('device_status'), map.get('queue_select'), map.get('config_generation')], [0, 0, 0]);
    assert.equal(map.get('config_msix_vector'), VIRTIO_MSI_NO_VECTOR);
    assert.equal(await r.driver.status(), 0);
  });
});

describe('feature negotiation and the status machine', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('offers VERSION_1, INDIRECT_DESC, EVENT_IDX and the device bits in the select windows', async () => {
    r = await rig();
    const f = await r.driver.deviceFeatures();
    assert.equal(f, featureBit(VirtioFeature.VERSION_1) | featureBit(VirtioFeature.INDIRECT_DESC) | featureBit(VirtioFeature.EVENT_IDX) | 1n);
    await r.driver.writeCommon(CommonCfg.DEVICE_FEATURE_SELECT, 4, 7);
    assert.equal(await r.driver.readCommon(CommonCfg.DEVICE_FEATURE, 4), 0, 'windows beyond 1 are empty');
  });

  test('FEATURES_OK sticks for a subset with VERSION_1', async () => {
    r = await rig();
    const { status, features } = await r.driver.negotiate(only(VirtioFeature.EVENT_IDX));
    assert.ok(status & VirtioStatus.FEATURES_OK);
    assert.equal(virtioTransportOf(r.echo.spec)!.features, features);
  });

  test('FEATURES_OK is refused without VERSION_1, or with a bit not offered', async () => {
    r = await rig();
    let n = await r.driver.negotiate(without(VirtioFeature.VERSION_1));
    assert.equal(n.status & VirtioStatus.FEATURES_OK, 0);
    n = await r.driver.negotiate((o) => o | featureBit(40));
    assert.equal(n.status & VirtioStatus.FEATURES_OK, 0);
    n = await r.driver.negotiate();
    assert.ok(n.status & VirtioStatus.FEATURES_OK, 'a good choice after a reset is accepted');
  });

  test('writing 0 resets: status, features and queues return to their initial values', async () => {
    r = await rig();
    await r.driver.start(2);
    assert.equal(await r.driver.status(), OK_STATUS);
    await r.driver.setStatus(0);
    assert.equal(await r.driver.status(), 0);
    await r.driver.writeCommon(CommonCfg.QUEUE_SELECT, 2, 0);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_ENABLE, 2), 0);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_SIZE, 2), 64);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_DESC, 8), 0);
    await r.driver.writeCommon(CommonCfg.DRIVER_FEATURE_SELECT, 4, 1);
    assert.equal(await r.driver.readCommon(CommonCfg.DRIVER_FEATURE, 4), 0);
    assert.ok(r.echo.resets >= 1);
  });

  test('DRIVER_OK without FEATURES_OK sets DEVICE_NEEDS_RESET', async () => {
    r = await rig();
    await r.driver.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.DRIVER_OK);
    assert.ok((await r.driver.status()) & VirtioStatus.DEVICE_NEEDS_RESET);
  });
});

describe('queue setup', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('size, vectors, notify offset; a vector beyond the table reads back as NO_VECTOR', async () => {
    r = await rig();
    await r.driver.negotiate();
    await r.driver.writeCommon(CommonCfg.QUEUE_SELECT, 2, 1);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_SIZE, 2), 64);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_NOTIFY_OFF, 2), 1);
    await r.driver.writeCommon(CommonCfg.QUEUE_MSIX_VECTOR, 2, 2);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_MSIX_VECTOR, 2), 2);
    await r.driver.writeCommon(CommonCfg.QUEUE_MSIX_VECTOR, 2, 3);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_MSIX_VECTOR, 2), VIRTIO_MSI_NO_VECTOR);
    await r.driver.writeCommon(CommonCfg.CONFIG_MSIX_VECTOR, 2, 99);
    assert.equal(await r.driver.readCommon(CommonCfg.CONFIG_MSIX_VECTOR, 2), VIRTIO_MSI_NO_VECTOR);
    await r.driver.writeCommon(CommonCfg.QUEUE_SELECT, 2, 5);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_SIZE, 2), 0, 'no queue 5');
    // 64-bit addresses by two 32-bit halves, as Linux writes them.
    await r.driver.writeCommon(CommonCfg.QUEUE_SELECT, 2, 0);
    await r.driver.writeCommon(CommonCfg.QUEUE_DESC, 4, 0x12345000);
    await r.driver.writeCommon(CommonCfg.QUEUE_DESC + 4, 4, 0x1);
    assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_DESC, 8), 0x1_12345000);
  });

  test('a smaller power-of-two size works', async () => {
    r = await rig();
    await r.driver.start(2, undefined, 8);
    for (let i = 0; i < 20; i++) assert.equal(await echoOnce(r.driver, `wrap ${i}`), `wrap ${i}`);
  });

  for (const [what, size, addrs] of [
    ['a size that is not a power of two', 48, undefined],
    ['a size above the maximum', 128, undefined],
    ['rings in unmapped memory', 16, { desc: 0x100000, avail: 0x200000, used: 0x300000 }],
    ['a misaligned descriptor table', 16, { desc: GUEST_BASE + 8, avail: GUEST_BASE + 0x1000, used: GUEST_BASE + 0x2000 }],
  ] as const) {
    test(`enabling a queue with ${what} sets DEVICE_NEEDS_RESET and logs why`, async () => {
      const { log, lines } = recordingLogger();
      r = await rig({ log });
      await r.driver.negotiate();
      await r.driver.writeCommon(CommonCfg.CONFIG_MSIX_VECTOR, 2, 0);
      await r.driver.setupQueue(0, size, { enable: addrs === undefined });
      if (addrs) {
        await r.driver.writeCommon(CommonCfg.QUEUE_DESC, 8, addrs.desc);
        await r.driver.writeCommon(CommonCfg.QUEUE_DRIVER, 8, addrs.avail);
        await r.driver.writeCommon(CommonCfg.QUEUE_DEVICE, 8, addrs.used);
        await r.driver.writeCommon(CommonCfg.QUEUE_ENABLE, 2, 1);
      }
      assert.ok((await r.driver.status()) & VirtioStatus.DEVICE_NEEDS_RESET);
      assert.equal(await r.driver.readCommon(CommonCfg.QUEUE_ENABLE, 2), 0);
      assert.ok(lines.some((l) => /^error: device needs reset \(DEVICE_NEEDS_RESET\): .*queue 0/.test(l)), `the server's log says why: ${JSON.stringify(lines)}`);
      await recovers(r);
    });
  }
});

describe('requests', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('doorbells by REGION_WRITE, posted REGION_WRITE and ioeventfd all reach the queue', async () => {
    r = await rig();
    await r.driver.start(2);
    assert.equal(await echoOnce(r.driver, 'by message', { kick: 'message' }), 'by message');
    assert.equal(await echoOnce(r.driver, 'posted write', { kick: 'posted' }), 'posted write');
    assert.equal(await echoOnce(r.driver, 'by ioeventfd', { kick: 'eventfd' }), 'by ioeventfd');
  });

  test('chains of many buffers, and indirect tables', async () => {
    r = await rig();
    await r.driver.start(2);
    const d = r.driver;
    const parts = ['ab', 'cde', 'f', 'ghij'];
    const bufs = parts.map((p) => ({ addr: d.put(Buffer.from(p)), len: p.length }));
    const outs = [3, 3, 4].map((len) => ({ addr: d.alloc(len), len, write: true }));
    for (const indirect of [false, true]) {
      const used = await d.roundTrip(0, [...bufs, ...outs], { indirect });
      assert.equal(used.len, 10);
      assert.equal(outs.map((o) => Buffer.from(d.bytes(o.addr, o.len)).toString()).join(''), 'abcdefghij');
      for (const o of outs) d.bytes(o.addr, o.len).fill(0);
    }
  });

  test('one kick drains every available chain; completions come out of order', async () => {
    r = await rig();
    await r.driver.start(2);
    const d = r.driver;
    const outs = [0, 1, 2, 3].map(() => d.alloc(4));
    const heads = outs.map((addr) => d.post(1, [{ addr, len: 4, write: true }]));
    await d.kick(1);
    await r.echo.held.waitFor(4);
    for (const h of [heads[2], heads[0], heads[3], heads[1]]) r.echo.held.release(h);
    const used = await d.waitUsed(1, 4);
    assert.deepEqual(used.map((u) => u.id).sort(), [...heads].sort());
    outs.forEach((addr, i) => assert.equal(Buffer.from(d.bytes(addr, 4)).readUInt32LE(0), heads[i]));
  });

  /** Polls guest memory until the used index reaches `idx` (the device wrote it). */
  async function usedReaches(d: VirtioDriver, qi: number, idx: number): Promise<void> {
    while (d.usedState(qi).idx !== idx) await new Promise((res) => setTimeout(res, 2));
    d.takeUsed(qi);
  }

  /** Every interrupt raised so far has been counted: exactly `n` on vector `v`. */
  async function interruptsAre(rr: Rig, v: number, n: number): Promise<void> {
    await rr.driver.vectors[v].waitFor(n);
    await rr.client.regionRead(0, 0, 4);
    assert.equal(rr.driver.vectors[v].total, n);
  }

  test('EVENT_IDX: the device publishes avail_event and interrupts only past used_event', async () => {
    r = await rig();
    await r.driver.start(2);
    const d = r.driver;
    assert.equal(await echoOnce(d, 'one'), 'one');
    assert.equal(d.usedState(0).availEvent, 1, 'avail_event follows the avail index');
    // used_event far ahead: this completion does not interrupt.
    d.setUsedEvent(0, 100);
    d.post(0, [{ addr: d.put(Buffer.from('x')), len: 1 }, { addr: d.alloc(1), len: 1, write: true }]);
    await d.kick(0);
    await usedReaches(d, 0, 2);
    // used_event = 2: the completion that moves the index past it interrupts.
    d.setUsedEvent(0, 2);
    assert.equal(await echoOnce(d, 'three'), 'three');
    await interruptsAre(r, 1, 2);
  });

  test('without EVENT_IDX: NO_INTERRUPT suppresses interrupts; NO_NOTIFY is clear when idle', async () => {
    r = await rig();
    await r.driver.start(2, without(VirtioFeature.EVENT_IDX));
    const d = r.driver;
    assert.equal(await echoOnce(d, 'plain'), 'plain');
    assert.equal(d.usedState(0).flags, 0);
    d.setAvailFlags(0, 1);
    d.post(0, [{ addr: d.put(Buffer.from('q')), len: 1 }, { addr: d.alloc(1), len: 1, write: true }]);
    await d.kick(0);
    await usedReaches(d, 0, 2);
    d.setAvailFlags(0, 0);
    assert.equal(await echoOnce(d, 'loud'), 'loud');
    await interruptsAre(r, 1, 2);
  });

  test('INTx with the ISR when MSI-X is not set up: ISR reads 1 once, then 0', async () => {
    r = await rig({ msix: false });
    const intx = new EventFd();
    try {
      await r.client.setIrqEventfds(IrqIndex.INTX, 0, [intx.fd]);
      await r.driver.start(2);
      const d = r.driver;
      d.post(0, [{ addr: d.put(Buffer.from('i')), len: 1 }, { addr: d.alloc(1), len: 1, write: true }]);
      await d.kick(0);
      await intx.waitFor(1);
      assert.equal((await r.client.regionRead(0, 0x1000, 1))[0], 1);
      assert.equal((await r.client.regionRead(0, 0x1000, 1))[0], 0);
      assert.equal(d.takeUsed(0).length, 1);
    } finally {
      intx.close();
    }
  });

  test('guest memory without an fd: rings and buffers by DMA messages', async () => {
    r = await rig({ memory: 'private' });
    await r.driver.start(2);
    assert.equal(await echoOnce(r.driver, 'over the socket'), 'over the socket');
    assert.equal(await echoOnce(r.driver, 'indirect too', { indirect: true }), 'indirect too');
    assert.ok(r.client.dmaRequestsServed > 0);
  });

  test('a buffer in unmapped memory fails that request only', async () => {
    r = await rig();
    await r.driver.start(2);
    const used = await r.driver.roundTrip(0, [{ addr: 0x5000_0000, len: 8 }, { addr: r.driver.alloc(8), len: 8, write: true }]);
    assert.equal(used.len, 0);
    assert.equal(await r.driver.status(), OK_STATUS);
    assert.equal(await echoOnce(r.driver, 'next one'), 'next one');
  });

  test('device reset during I/O: answered once the held request ended, which is dropped; the device works after setup', async () => {
    r = await rig();
    await r.driver.start(2);
    const d = r.driver;
    const head = d.post(1, [{ addr: d.alloc(4), len: 4, write: true }]);
    await d.kick(1);
    await r.echo.held.waitFor(1);
    const usedBefore = d.usedState(1).idx;
    let released = false;
    const reset = d.setStatus(0).then(() => released);
    const transport = virtioTransportOf(r.server.device.spec)!;
    await waitUntil(() => transport.status === 0, 'the device to take the reset');
    released = true;
    r.echo.held.release(head);
    assert.equal(await reset, true, 'the reset was answered after the held request ended');
    assert.equal(d.usedState(1).idx, usedBefore, 'no completion after reset');
    await d.start(2);
    assert.equal(await echoOnce(d, 'fresh'), 'fresh');
  });

  test('DMA_UNMAP of memory pinned by a request in flight is answered only after the request ends', async () => {
    r = await rig();
    await r.driver.start(2);
    const d = r.driver;
    const head = d.post(1, [{ addr: d.alloc(4), len: 4, write: true }]);
    await d.kick(1);
    await r.echo.held.waitFor(1);
    let released = false;
    const unmap = r.client.dmaUnmap(GUEST_BASE, d.mem.bytes.length).then(() => released);
    setImmediate(() => {
      released = true;
      r!.echo.held.release(head);
    });
    assert.equal(await unmap, true, 'the unmap reply came after the pin dropped');
  });
});

describe('a driver that breaks the ring gets DEVICE_NEEDS_RESET, never a stuck device', () => {
  let r: Rig | undefined;
  beforeEach(async () => {
    r = await rig({ queueSize: 16 });
    await r.driver.start(2);
  });
  afterEach(() => close(r));

  const cases: [string, (d: VirtioDriver) => void][] = [
    ['a descriptor loop', (d) => {
      const q = d.queues.get(0)!;
      d.writeDesc(q.desc, 0, { addr: d.alloc(8), len: 8, flags: DescFlag.NEXT, next: 1 });
      d.writeDesc(q.desc, 1, { addr: d.alloc(8), len: 8, flags: DescFlag.NEXT, next: 0 });
      d.publish(0, 0);
    }],
    ['a next index beyond the queue', (d) => {
      const q = d.queues.get(0)!;
      d.writeDesc(q.desc, 0, { addr: d.alloc(8), len: 8, flags: DescFlag.NEXT, next: 999 });
      d.publish(0, 0);
    }],
    ['a head index beyond the queue', (d) => d.publish(0, 16)],
    ['an avail index jumping by more than the queue size', (d) => d.setAvailIdx(0, 17)],
    ['an indirect table inside an indirect table', (d) => {
      const q = d.queues.get(0)!;
      const inner = d.alloc(16, 16);
      d.writeDesc(inner, 0, { addr: d.alloc(8), len: 8, flags: 0, next: 0 });
      const outer = d.alloc(16, 16);
      d.writeDesc(outer, 0, { addr: inner, len: 16, flags: DescFlag.INDIRECT, next: 0 });
      d.writeDesc(q.desc, 0, { addr: outer, len: 16, flags: DescFlag.INDIRECT, next: 0 });
      d.publish(0, 0);
    }],
    ['an indirect table of a length not a multiple of 16', (d) => {
      const q = d.queues.get(0)!;
      d.writeDesc(q.desc, 0, { addr: d.alloc(32, 16), len: 24, flags: DescFlag.INDIRECT, next: 0 });
      d.publish(0, 0);
    }],
    ['an indirect table in unmapped memory', (d) => {
      const q = d.queues.get(0)!;
      d.writeDesc(q.desc, 0, { addr: 0x7000_0000, len: 64, flags: DescFlag.INDIRECT, next: 0 });
      d.publish(0, 0);
    }],
    ['an indirect table whose chain loops', (d) => {
      const q = d.queues.get(0)!;
      const t = d.alloc(32, 16);
      d.writeDesc(t, 0, { addr: d.alloc(8), len: 8, flags: DescFlag.NEXT, next: 1 });
      d.writeDesc(t, 1, { addr: d.alloc(8), len: 8, flags: DescFlag.NEXT, next: 0 });
      d.writeDesc(q.desc, 0, { addr: t, len: 32, flags: DescFlag.INDIRECT, next: 0 });
      d.publish(0, 0);
    }],
    ['a device-readable buffer after a device-writable one', (d) => {
      const q = d.queues.get(0)!;
      d.writeDesc(q.desc, 0, { addr: d.alloc(8), len: 8, flags: DescFlag.NEXT | DescFlag.WRITE, next: 1 });
      d.writeDesc(q.desc, 1, { addr: d.alloc(8), len: 8, flags: 0, next: 0 });
      d.publish(0, 0);
    }],
    ['a head made available twice while in flight', (d) => {
      const q = d.queues.get(1)!;
      d.writeDesc(q.desc, 0, { addr: d.alloc(4), len: 4, flags: DescFlag.WRITE, next: 0 });
      d.publish(1, 0);
      d.publish(1, 0);
    }],
  ];

  for (const [what, breakIt] of cases) {
    test(what, async () => {
      const seen = r!.driver.vectors[0].total;
      breakIt(r!.driver);
      await r!.driver.kick(what.includes('twice') ? 1 : 0);
      await expectNeedsReset(r!, seen);
      assert.ok(virtioTransportOf(r!.echo.spec)!.brokenReason);
      for (const h of [...r!.echo.held.held.keys()]) r!.echo.held.release(h);
      await recovers(r!);
    });
  }
});
