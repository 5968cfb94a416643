// NVMe under --isolate: the controller's in-flight I/O survives the death of
// its process (the in-flight log: src/nvme/inflight-log.ts, recovery.ts).
// Commands are neither lost, nor completed twice, nor corrupted, whatever
// the point the process dies at.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PersistentBlock } from '../src/device/persistent.js';
import { InflightLog } from '../src/nvme/inflight-log.js';
import { REG, type Cqe, type NvmeDriver } from './helpers/nvme-driver.js';
import { blockPattern, killed, killUnderIo, nvmeIsolated, prng, pump, VerifiedIo, type KillPoint } from './helpers/nvme-isolated.js';

test('nvme in-flight log: what one process stores, its successor reads back; numbering goes on; entries free and refill', () => {
  const memory = new Uint8Array(4 << 20);
  const first = new PersistentBlock(memory);
  first.clear();
  const log = InflightLog.attach(first, 3, 4);
  assert.ok(log.fresh);
  log.clear();
  assert.equal(log.capacity, 9, '3 queue ids of 4 entries: 3 commands each at most');
  log.registers({ cc: 0x460001, csts: 1, aqa: 0x1f001f, intms: 5, asq: 0xffff_ffff_ffff_f000n, acq: 0x1000n });
  for (const qid of [0, 1]) {
    log.queueCreated(qid, true);
    log.queueCreated(qid, false);
  }
  const sqe = new Uint8Array(128).map((_, i) => i);
  const a = log.taken(1, 1, sqe, 64);
  const b = log.taken(1, 2, sqe, 0);
  log.taken(0, 1, sqe, 0);
  log.posted(b, 1, 1, 1);
  log.sqTail(1, 3);
  log.cqHead(1, 1);
  assert.ok(log.writeSnapshot('{"v":1}'));
  assert.ok(log.writeSnapshot('{"v":2}'));
  assert.equal(log.writeSnapshot('x'.repeat(70_000)), false, 'a snapshot too large is refused');

  // A successor maps the same memory.
  const next = InflightLog.attach(new PersistentBlock(memory), 3, 4);
  assert.equal(next.fresh, false);
  assert.deepEqual(next.readRegisters(), { cc: 0x460001, csts: 1, aqa: 0x1f001f, intms: 5, asq: 0xffff_ffff_ffff_f000n, acq: 0x1000n });
  assert.equal(next.readSnapshot(), '{"v":2}', 'the last snapshot that fit');
  assert.deepEqual(
    next.commands().map((c) => [c.seq, c.sqid]),
    [
      [1, 1],
      [3, 0],
    ],
    'oldest first; the posted one is gone',
  );
  assert.deepEqual([...next.entry(a)], [...sqe.subarray(64)], 'the SQE as it was taken');
  assert.deepEqual(next.sqFetched(1), { head: 2, seq: 2 });
  assert.equal(next.sqTailWritten(1), 3);
  assert.deepEqual(next.cqPosition(1), { tail: 1, phase: 1, head: 1 });
  assert.deepEqual(next.cqPosition(0), { tail: 0, phase: 1, head: 0 });
  // Numbering goes on past everything the predecessor stored; every free entry is used before none is left.
  const more = Array.from({ length: 7 }, () => next.taken(0, 2, sqe, 0));
  assert.equal(new Set([...more, a]).size, 8);
  assert.equal(next.seqOf(more[0]), 4);
  assert.ok(next.hasRoom === false);
  next.drop(more[3]);
  assert.ok(next.hasRoom);
  next.clear();
  assert.deepEqual(next.commands(), []);
  assert.equal(next.readSnapshot(), undefined);
});

const AER = 0x0c;
const IDENTIFY = 0x06;
const GET_LOG_PAGE = 0x02;

/** Submits an Asynchronous Event Request (not reaped): its cid. */
async function holdAer(d: NvmeDriver): Promise<number> {
  const q = d.queues.get(0)!;
  const old = q.tail;
  const cid = d.put(0, { opcode: AER, cid: 0x7000 + (q.tail & 0xff) });
  await d.submit(0, old);
  return cid;
}

/** Reaps the admin queue for `ms`: every completion that arrives. */
async function adminCompletions(d: NvmeDriver, ms: number): Promise<Cqe[]> {
  const out: Cqe[] = [];
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!d.cqEmpty(0)) out.push(await d.reap(0));
    else await new Promise((r) => setTimeout(r, 1));
  }
  return out;
}

/** A controller error event (invalid doorbell register: a queue id the controller does not have). */
async function raiseErrorEvent(d: NvmeDriver): Promise<void> {
  await d.ring(2 * 9, 1);
}

test('isolate nvme: a kill at each point of the pipeline loses no command, completes none twice, corrupts nothing', async () => {
  const n = await nvmeIsolated({ mib: 8 });
  const io = new VerifiedIo(n, [1, 2], 8, 256, prng(7));
  let restarts = 0;
  try {
    await pump(io, () => io.completed >= 64);
    const aer = await holdAer(n.driver);
    const points: [KillPoint, number][] = [
      ['taken', 5],
      // The fourth command of a batch has its entry but not its SQ's fetch word: it was never taken.
      ['half-logged', 3],
      ['data-moved', 4],
      ['cqe-written', 6],
      ['entry-freed', 6],
    ];
    for (const [point, passes] of points) await killUnderIo(n, io, point, passes, ++restarts);

    // One write alone in flight, killed with its CQE in guest memory and its interrupt not raised: the successor raises it.
    const d = n.driver;
    const lba = 4242;
    const gen = 0x7fff0000;
    const buf = d.alloc(512);
    blockPattern(lba, gen, d.bytes(buf, 512), 0);
    const irqs = d.vectors[1].total;
    await n.arm('cqe-written');
    restarts++;
    const q1 = d.queues.get(1)!;
    const old = q1.tail;
    const cid = d.put(1, { opcode: 0x01, nsid: 1, prp1: buf, cdw10: lba, cdw12: 0 });
    await d.submit(1, old);
    await killed(n, restarts);
    await d.vectors[1].waitFor(irqs + 1, 3000);
    const lone = await d.reap(1);
    assert.deepEqual([lone.cid, lone.status], [cid, 0]);
    assert.ok(d.cqEmpty(1), 'posted once');
    io.generation[lba] = gen;

    // An admin command killed after its effect, before (then after) its snapshot: it completes once, with its effect.
    for (const point of ['admin-executed', 'admin-snapshot'] as const) {
      assert.equal((await d.admin({ opcode: 0x00, cdw10: 2 })).status, 0, 'delete SQ 2');
      assert.equal((await d.admin({ opcode: 0x04, cdw10: 2 })).status, 0, 'delete CQ 2');
      // As Linux does for a new queue: its shadow doorbells start at zero.
      d.bytes(d.dbbuf!.dbs + 16, 8).fill(0);
      d.bytes(d.dbbuf!.eis + 16, 8).fill(0);
      await n.arm(point);
      restarts++;
      const cq = await d.createCq(2, 64);
      assert.equal(cq.status, 0, `${point}: Create I/O CQ completes once, successfully`);
      await killed(n, restarts);
      const sq = await d.createSq(2, 64, 2);
      assert.equal(sq.status, 0, `${point}: the CQ exists after the recovery (Create I/O SQ on it: 0x${sq.status.toString(16)})`);
      io.addQueue(2);
      const before = io.completed;
      await pump(io, () => io.completed >= before + 48);
    }

    // The Asynchronous Event Request held since the start survived 8 kills: it completes once, and no copy of it is held.
    await raiseErrorEvent(d);
    const first = await adminCompletions(d, 300);
    assert.deepEqual(
      first.map((c) => [c.cid, c.status, c.dw0 & 0xff]),
      [[aer, 0, 0]],
      'the AER completes once, with the error event',
    );
    const log = d.alloc(4096);
    assert.equal((await d.admin({ opcode: GET_LOG_PAGE, prp1: log, cdw10: 0x01 | (15 << 16) })).status, 0, 'error log read (unmasks error events)');
    await d.ring(2 * 10, 1);
    assert.deepEqual(await adminCompletions(d, 200), [], 'no second AER was held');

    // Three admin commands on one doorbell (the admin queue has no shadow doorbell): the first runs, the others wait
    // unfetched behind it, their tail known only from the doorbell write the child answered. Killed as the first
    // completes, the successor finds that tail in the log and runs the other two.
    const q0 = d.queues.get(0)!;
    const tail0 = q0.tail;
    const cids = [1, 2, 3].map(() => d.put(0, { opcode: IDENTIFY, prp1: d.alloc(4096), cdw10: 1 }));
    await n.arm('admin-executed');
    restarts++;
    await d.submit(0, tail0);
    await killed(n, restarts);
    const identified = await adminCompletions(d, 400);
    assert.deepEqual(
      identified.map((c) => [c.cid, c.status]),
      cids.map((cid) => [cid, 0]),
      'each of the three once, in order',
    );

    // A kill after CC.EN was cleared: the successor finishes the reset, the driver starts again.
    const second = await holdAer(d);
    await n.arm('reset');
    restarts++;
    await d.write32(REG.CC, 0);
    await killed(n, restarts);
    await d.waitCsts(1, 0);
    io.abandon();
    await d.enable();
    await d.createIoQueues(2, 64);
    assert.equal((await d.configureShadowDoorbells()).status, 0);
    io.addQueue(1);
    io.addQueue(2);
    const before = io.completed;
    await pump(io, () => io.completed >= before + 64);
    assert.notEqual(second, -1);
    assert.equal((await d.identify(1)).cqe.status, 0, 'the connection and the admin queue are in sync');
    assert.equal(n.server.restarts, restarts);
  } catch (e) {
    throw new Error(`${(e as Error).message}; the supervisor said: ${n.said.join(' | ')}`);
  } finally {
    n.close();
  }
});

/**
 * `rounds` SIGKILLs at random moments (every fifth a controller reset, two
 * in five inside a doorbell at the log's `taken` point) under verified
 * random I/O at QD 8 on 2 queues, served on `workers` queue threads.
 */
async function randomKills(rounds: number, workers: number): Promise<void> {
  const n = await nvmeIsolated({ mib: 16, workers });
  const random = prng(20261207 + workers);
  const io = new VerifiedIo(n, [1, 2], 8, 256, random);
  const d = n.driver;
  const latencies: number[] = [];
  const kinds: Record<string, number> = {};
  let resetting = false;
  let stop = false;
  let resets = 0;
  let kills = 0;
  /** Set by the killer: the driver kills the child at its next step, between two of its messages. */
  let killNow = false;
  let killedAt = { time: 0, done: 0, waiting: 0, measure: false };
  const step = (): void => {
    if (!killNow) return;
    killNow = false;
    killedAt = { time: performance.now(), done: io.completed, waiting: io.postedUnreaped(), measure: !resetting && io.outstanding > 0 };
    process.kill(n.server.childPid!, 'SIGKILL');
    kills++;
  };
  const measure = (): void => {
    if (killedAt.measure && io.completed > killedAt.done + killedAt.waiting) {
      // The first command completed by the successor (those posted before the kill excepted).
      latencies.push(io.completions[killedAt.done + killedAt.waiting] - killedAt.time);
      killedAt.measure = false;
    }
  };
  // The driver: I/O, and a controller reset when asked.
  const driver = (async () => {
    while (!stop) {
      step();
      if (resetting) {
        await io.finish();
        step();
        await d.write32(REG.CC, 0);
        step();
        await d.waitCsts(1, 0);
        step();
        await d.enable();
        step();
        await d.createIoQueues(2, 64);
        step();
        assert.equal((await d.configureShadowDoorbells()).status, 0);
        io.addQueue(1);
        io.addQueue(2);
        resets++;
        resetting = false;
        continue;
      }
      await io.submit();
      step();
      const reaped = await io.reap();
      measure();
      if (reaped === 0) await new Promise((r) => setTimeout(r, 0));
    }
    await io.finish();
  })();
  // The driver's own failure (a reset that never completes, a command lost) is what a wait below reports.
  let driverFailure: unknown;
  driver.catch((e: unknown) => (driverFailure = e));
  const until = async (cond: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 8000;
    while (!cond()) {
      if (io.failure) throw io.failure;
      if (driverFailure) throw driverFailure as Error;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (${n.server.restarts} restarts, ${io.outstanding} commands in flight${resetting ? ', inside a controller reset' : ''})`);
      await new Promise((r) => setTimeout(r, 1));
    }
  };
  const adoptions: number[] = [];
  n.server.on('recovered', (r: { ms: number }) => adoptions.push(r.ms));
  try {
    for (let k = 0; k < rounds; k++) {
      await n.server.standby();
      const kind = ['any moment', 'inside a doorbell', 'large transfer', 'inside a doorbell', 'controller reset'][k % 5];
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      if (kind === 'inside a doorbell') {
        // The child dies while it serves a request: fetching a command, the request read and not answered.
        killedAt = { time: performance.now(), done: io.completed, waiting: 0, measure: false };
        await n.arm('taken', Math.floor(random() * 40));
        // Its successor serving: the next kill must not hit the child that is dying already.
        await until(() => !n.armed() && n.server.restarts > k, 'the armed kill');
        continue;
      }
      if (kind === 'controller reset') {
        resetting = true;
        await new Promise((r) => setTimeout(r, random() * 12));
      } else {
        await new Promise((r) => setTimeout(r, 2 + random() * 20));
        if (kind === 'large transfer') await until(() => io.largeInFlight, 'a large transfer in flight');
      }
      killNow = true;
      await until(() => !killNow && n.server.restarts > k, 'the kill');
    }
    await until(() => !resetting && n.server.restarts === rounds, 'the last recovery');
    stop = true;
    await driver;
    assert.equal(io.failure, undefined);
    assert.equal((await d.identify(1)).cqe.status, 0, 'the connection and the admin queue are in sync');
    assert.equal(n.server.restarts, rounds);
    assert.equal(kills, Array.from({ length: rounds }, (_, k) => k % 5).filter((k) => k !== 1 && k !== 3).length, 'every kill but the armed ones by signal');
    assert.ok(resets >= Math.floor(rounds / 5), `${resets} controller resets`);
    assert.ok(io.largest > 0, 'large transfers ran');
    latencies.sort((a, b) => a - b);
    process.stderr.write(
      `isolate nvme${workers ? ` (${workers} queue threads)` : ''}: ${io.completed} commands (${io.reads} reads, ${io.writes} writes, ${io.largest} of 128 KiB) verified across ${rounds} kills (${JSON.stringify(kinds)}); ` +
        `SIGKILL to the successor serving (this process is also the parent and a busy driver): median ${adoptions.sort((a, b) => a - b)[adoptions.length >> 1]?.toFixed(0)} ms; ` +
        `to the first command it completed (${latencies.length} kills with I/O in flight): ${latencies.map((x) => x.toFixed(0)).join(', ')} ms\n`,
    );
  } finally {
    stop = true;
    await driver.catch(() => undefined);
    n.close();
  }
}

test('isolate nvme: 20 SIGKILLs at random moments under verified random I/O at QD 8 on 2 queues', () => randomKills(20, 0));

test('isolate nvme: 10 SIGKILLs at random moments, controller resets among them, with the I/O queues on 2 worker threads', () => randomKills(10, 2));

test('isolate nvme: a kill after a post that took its room from the shadow CQ head finds that post (the head it read is logged)', async () => {
  // CQ 1 of 16 entries with shadow doorbells. The driver rings the CQ head register once (EventIdx 0 asks for it at
  // the first reap), then only updates the shadow head: the controller's head stays at 1 until the queue looks full.
  const entries = 16;
  const n = await nvmeIsolated({ queues: 1, entries });
  const d = n.driver;
  const buf = d.alloc(512);
  try {
    for (let i = 0; i < entries; i++) assert.equal((await d.run(1, { opcode: 0x02, nsid: 1, prp1: buf, cdw10: i, cdw12: 0 })).status, 0);
    // The 17th posts at slot 0 again: the queue looks full at head 1, the shadow head (0) makes room, and the
    // process dies with the entry freed and the tail not logged. The successor must find the post by its phase.
    await n.arm('entry-freed');
    const q1 = d.queues.get(1)!;
    const old = q1.tail;
    const cid = d.put(1, { opcode: 0x02, nsid: 1, prp1: buf, cdw10: 99, cdw12: 0 });
    await d.submit(1, old);
    await killed(n, 1);
    const c = await d.reap(1);
    assert.deepEqual([c.cid, c.status], [cid, 0]);
    // The next completion goes to the next slot, not over the one found.
    for (let i = 0; i < 4; i++) assert.equal((await d.run(1, { opcode: 0x02, nsid: 1, prp1: buf, cdw10: i, cdw12: 0 })).status, 0, `read ${i} after the recovery`);
  } finally {
    n.close();
  }
});
