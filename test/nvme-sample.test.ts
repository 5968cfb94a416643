/**
 * The `nvme` sample's command line: RAM namespaces, an image split into
 * namespaces, read-only, queue counts, and refused option combinations.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { nvmeControllerOf, type DeviceSpec } from '../src/index.js';
import { SAMPLES } from '../src/samples/index.js';
import { nvmeFromOptions } from '../src/samples/nvme.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-nvme-sample-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const create = (values: Record<string, string | boolean | undefined>): Promise<DeviceSpec> => nvmeFromOptions(values);

test('the nvme sample is registered and declares its options', () => {
  assert.ok(SAMPLES.nvme);
  for (const name of ['image', 'size', 'read-only', 'namespaces', 'queues']) assert.ok(SAMPLES.nvme.options?.[name], name);
});

test('--size with --namespaces and --queues', async () => {
  const spec = await create({ size: '1M', namespaces: '3', queues: '2' });
  const c = nvmeControllerOf(spec)!;
  assert.equal(c.config.namespaces.length, 3);
  assert.ok(c.config.namespaces.every((ns) => ns.blocks === 2048));
  assert.equal(c.config.ioQueues, 2);
  assert.equal(spec.identity.classCode, 0x010802);
});

test('--image split into namespaces, --read-only', async () => {
  const image = join(dir, 'disk.img');
  writeFileSync(image, '');
  truncateSync(image, 8 * 1024 * 1024);
  const one = nvmeControllerOf(await create({ image }))!;
  assert.equal(one.config.namespaces[0].blocks, (8 * 1024 * 1024) / 512);
  await one.config.namespaces[0].disk.close();
  const two = nvmeControllerOf(await create({ image, namespaces: '2', 'read-only': true }))!;
  assert.deepEqual(
    two.config.namespaces.map((ns) => [ns.blocks, ns.readOnly]),
    [
      [8192, true],
      [8192, true],
    ],
  );
  for (const ns of two.config.namespaces) await ns.disk.close();
});

test('bad option combinations are refused with a message', async () => {
  await assert.rejects(create({}), /--image <file>, --size <N\[KMG\]> or --nbd <uri>/);
  await assert.rejects(create({ image: 'x', size: '1M' }), /one of --image, --size or --nbd/);
  await assert.rejects(create({ image: 'x', nbd: 'nbd://localhost/x' }), /one of --image, --size or --nbd/);
  await assert.rejects(create({ size: '1M', namespaces: '0' }), /--namespaces must be 1\.\.64/);
  await assert.rejects(create({ size: '1M', queues: '65' }), /--queues must be 1\.\.64/);
  await assert.rejects(create({ size: '1M', serial: 'x'.repeat(21) }), /serial/);
  await assert.rejects(create({ size: '7' }), /size/);
});
