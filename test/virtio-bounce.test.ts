/** The bounce-buffer budget that bounds copies of fd-less guest memory. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BounceBudget } from '../src/virtio/index.js';

const settled = async (p: Promise<unknown>): Promise<boolean> => {
  let done = false;
  void p.then(() => (done = true));
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return done;
};

test('requests beyond the limit wait in order until bytes are released', async () => {
  const b = new BounceBudget(100);
  const r1 = await b.acquire(60);
  const r2 = await b.acquire(40);
  const third = b.acquire(30);
  const fourth = b.acquire(10);
  assert.equal(await settled(third), false, 'the budget is full');
  assert.equal(await settled(fourth), false, 'later requests queue behind earlier ones');
  r2();
  r2(); // releasing twice frees once
  const r3 = await third;
  const r4 = await fourth;
  const big = b.acquire(500); // larger than the limit: waits for everything
  assert.equal(await settled(big), false);
  r1();
  r3();
  assert.equal(await settled(big), false);
  r4();
  (await big)();
});

test('a request that already holds bytes takes more at once (no circular wait)', async () => {
  const b = new BounceBudget(10);
  const r = await b.acquire(10);
  const more = await b.acquire(10, true);
  more();
  r();
  (await b.acquire(10))();
});
