/**
 * An NVMe controller under `--isolate` over an image file, driven by the
 * test NVMe driver, with kills at named points of its pipeline: the device
 * file wraps the controller's in-flight log and parts (in the child only,
 * so the product's hot path has no hook), and a point fires once when the
 * test arms it (a file names the point and how many passes to let by).
 */
import { existsSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '../../src/client/index.js';
import { IsolatedServer } from '../../src/isolate/index.js';
import { CHILD_ENTRY, quiet, tempDir, until } from './isolated.js';
import { NvmeDriver, PAGE, type Cqe } from './nvme-driver.js';

const INDEX = fileURLToPath(new URL('../../src/index.js', import.meta.url));
const SAMPLE = fileURLToPath(new URL('../../src/samples/nvme.js', import.meta.url));

/**
 * Named points a kill can be armed at:
 * - `taken`: a command is in the log, not started;
 * - `half-logged`: a command's entry is written, its SQ's fetch word not yet;
 * - `data-moved`: a command's data moved, its completion not queued;
 * - `cqe-written`: a CQE is in guest memory, the log not told;
 * - `entry-freed`: a CQE is in guest memory and its entry freed, the CQ tail not logged;
 * - `admin-executed`: an admin command took effect, its snapshot not written;
 * - `admin-snapshot`: an admin command's effect and result are in the snapshot, its CQE not posted;
 * - `reset`: CC.EN was cleared, the abandoned commands not yet settled.
 */
export type KillPoint = 'taken' | 'half-logged' | 'data-moved' | 'cqe-written' | 'entry-freed' | 'admin-executed' | 'admin-snapshot' | 'reset';

function deviceFile(dir: string, image: string, arm: string, queues: number, workers: number, mmapDoorbells: boolean): string {
  const file = join(dir, 'nvme-kill.mjs');
  writeFileSync(
    file,
    `import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { nvmeControllerOf } from ${JSON.stringify(INDEX)};
import { nvmeFromOptions } from ${JSON.stringify(SAMPLE)};
const ARM = ${JSON.stringify(arm)};
function fire(point) {
  if (!existsSync(ARM)) return;
  const [want, passes] = readFileSync(ARM, 'utf8').split(':');
  if (want !== point) return;
  if (Number(passes) > 0) return void writeFileSync(ARM, want + ':' + (Number(passes) - 1));
  unlinkSync(ARM);
  process.kill(process.pid, 'SIGKILL');
}
export default async function () {
  const spec = await nvmeFromOptions({ image: ${JSON.stringify(image)}, queues: '${queues}'${workers > 0 ? `, workers: '${workers}'` : ''}${mmapDoorbells ? `, 'mmap-doorbells': true` : ''} });
  const c = nvmeControllerOf(spec);
  const hook = () => {
    const log = c.log;
    if (!log || log.hooked) return;
    // With workers the log's own points (MUSER_NVME_CRASH_ARM, every thread) fire; the admin ones below still do.
    const logPoints = ${workers === 0};
    log.hooked = true;
    const taken = log.taken.bind(log);
    if (logPoints) log.taken = (sqid, head, bytes, at) => {
      const word = log.f64[log.queuesAt / 8 + sqid * 3];
      const slot = taken(sqid, head, bytes, at);
      if (existsSync(ARM) && readFileSync(ARM, 'utf8').startsWith('half-logged:0')) log.f64[log.queuesAt / 8 + sqid * 3] = word;
      fire('half-logged');
      fire('taken');
      return slot;
    };
    const posted = log.posted.bind(log);
    if (logPoints) log.posted = (slot, cqid, tail, phase) => {
      fire('cqe-written');
      const word = log.u32[log.queuesAt / 4 + cqid * 6 + 3];
      posted(slot, cqid, tail, phase);
      if (existsSync(ARM) && readFileSync(ARM, 'utf8').startsWith('entry-freed:0')) log.u32[log.queuesAt / 4 + cqid * 6 + 3] = word;
      fire('entry-freed');
    };
    const write = log.writeSnapshot.bind(log);
    log.writeSnapshot = (json) => {
      if (JSON.parse(json).done) fire('admin-executed');
      const ok = write(json);
      if (JSON.parse(json).done) fire('admin-snapshot');
      return ok;
    };
    const clear = log.clear.bind(log);
    log.clear = () => {
      clear();
      if ((c.regs.cc & 1) === 0) fire('reset');
    };
  };
  const complete = c.poster.complete.bind(c.poster);
  c.poster.complete = (sq, cid, nsid, status, dw0, slot) => {
    if (sq.id > 0) fire('data-moved');
    complete(sq, cid, nsid, status, dw0, slot);
  };
  const onConnect = spec.onConnect;
  spec.onConnect = (d) => { onConnect(d); hook(); };
  const onRecover = spec.onRecover;
  spec.onRecover = (d, reason) => { const r = onRecover(d, reason); hook(); return r; };
  return spec;
}
`,
  );
  return file;
}

/** An isolated NVMe controller, a client and a driver with `queues` I/O queue pairs. */
export interface NvmeIsolated {
  dir: string;
  server: IsolatedServer;
  client: Client;
  driver: NvmeDriver;
  blocks: number;
  /** Arms a kill at `point`, letting `passes` passes by first; resolves once armed. */
  arm(point: KillPoint, passes?: number): Promise<void>;
  /** True while an armed point has not fired. */
  armed(): boolean;
  /** What the supervisor said (each child replaced, and why), for a failure's message. */
  readonly said: string[];
  close(): void;
}

/**
 * Starts it: an image of `mib` MiB, `queues` I/O queue pairs of `entries` entries, shadow doorbells or not;
 * `mmapDoorbells`: the driver rings by stores into the mapped doorbell page, served with a poll window of `pollIdleMs`.
 */
export async function nvmeIsolated(
  o: { mib?: number; queues?: number; entries?: number; shadow?: boolean; memory?: 'shared' | 'private'; workers?: number; mmapDoorbells?: boolean; pollIdleMs?: number } = {},
): Promise<NvmeIsolated> {
  const dir = tempDir();
  const image = join(dir, 'disk.img');
  const mib = o.mib ?? 8;
  // A sparse image of the size asked for.
  writeFileSync(image, '');
  truncateSync(image, mib * 1024 * 1024);
  const armFile = join(dir, 'arm');
  const queues = o.queues ?? 2;
  const workers = o.workers ?? 0;
  const said: string[] = [];
  // Queue threads' log points are armed through the environment (src/nvme/crash-points.ts), with the same file.
  const env = workers > 0 ? { ...process.env, MUSER_NVME_CRASH_ARM: armFile } : undefined;
  const device = { device: deviceFile(dir, image, armFile, queues, workers, o.mmapDoorbells ?? false), options: {}, pollIdleMs: o.pollIdleMs };
  const server = await IsolatedServer.start(device, join(dir, 'nvme.sock'), { entry: CHILD_ENTRY, log: { ...quiet, warn: (m: string) => said.push(m), error: (m: string) => said.push(m) }, env });
  const client = await Client.connect(server.path);
  const driver = await NvmeDriver.open(client, { memorySize: 24 * 1024 * 1024, memory: o.memory });
  if (o.mmapDoorbells) await driver.mapDoorbells();
  await driver.enable();
  await driver.createIoQueues(queues, o.entries ?? 64);
  if (o.shadow ?? true) {
    const c = await driver.configureShadowDoorbells();
    if (c.status !== 0) throw new Error(`Doorbell Buffer Config: 0x${c.status.toString(16)}`);
  }
  return {
    dir,
    server,
    client,
    driver,
    blocks: (mib * 1024 * 1024) / 512,
    async arm(point, passes = 0) {
      await server.standby();
      writeFileSync(armFile, `${point}:${passes}`);
    },
    armed: () => existsSync(armFile),
    said,
    close() {
      driver.close();
      client.close();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Waits until the armed point fired and a successor took over. */
export async function killed(n: NvmeIsolated, restarts: number, timeoutMs = 8000): Promise<void> {
  await until(() => !n.armed() && n.server.restarts >= restarts, timeoutMs, `the armed kill to fire (restart ${restarts})`);
}

/**
 * A kill under verified I/O: arms `point` to fire on pass `passes`, lets
 * the I/O run into it, waits for successor number `restarts`, then for
 * `more` further commands; throws when any block read back was wrong.
 */
export async function killUnderIo(n: NvmeIsolated, io: VerifiedIo, point: KillPoint, passes: number, restarts: number, more = 48): Promise<void> {
  await n.arm(point, passes);
  await pump(io, () => !n.armed());
  await killed(n, restarts);
  const before = io.completed;
  await pump(io, () => io.completed >= before + more);
  if (io.failure !== undefined) throw new Error(`after a kill at ${point}: ${io.failure}`);
}

/** The 512 bytes block `lba` holds after write number `gen` (0: never written: zeros). */
export function blockPattern(lba: number, gen: number, out: Uint8Array, at: number): void {
  if (gen === 0) {
    out.fill(0, at, at + 512);
    return;
  }
  const v = new DataView(out.buffer, out.byteOffset + at, 512);
  v.setUint32(0, lba, true);
  v.setUint32(4, gen, true);
  let x = (lba * 2654435761 + gen * 40503) >>> 0 || 1;
  for (let i = 8; i < 512; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    v.setUint32(i, x >>> 0, true);
  }
}

/** One command of the workload in flight. */
interface Op {
  qid: number;
  cid: number;
  write: boolean;
  lba: number;
  blocks: number;
  gen: number;
  buf: number;
  slot: number;
  submittedAt: number;
}

/**
 * A fio-like verified workload: random writes of known contents and reads
 * that check them, at `depth` commands in flight on each I/O queue, no two
 * in flight on the same block. Every completion must match a command in
 * flight (none completes twice or unasked), succeed, and a read must
 * return what the last completed write put there.
 */
export class VerifiedIo {
  readonly generation: Int32Array;
  private readonly busy: Uint8Array;
  private readonly inflight = new Map<number, Map<number, Op>>();
  private readonly free = new Map<number, number[]>();
  private readonly buffers = new Map<number, { buf: number; list: number }[]>();
  private nextGen = 1;
  completed = 0;
  reads = 0;
  writes = 0;
  largest = 0;
  /** Completion times (performance.now()) of every command, for recovery latency. */
  readonly completions: number[] = [];
  failure: Error | undefined;

  constructor(
    private readonly n: NvmeIsolated,
    readonly queues: number[],
    private readonly depth: number,
    private readonly maxBlocks: number,
    private readonly random: () => number,
  ) {
    this.generation = new Int32Array(n.blocks);
    this.busy = new Uint8Array(n.blocks);
    for (const q of queues) this.addQueue(q);
  }

  /** Buffers and slots for queue `qid` (again after a controller reset re-created it). */
  addQueue(qid: number): void {
    const d = this.n.driver;
    this.inflight.set(qid, new Map());
    if (!this.buffers.has(qid)) this.buffers.set(qid, Array.from({ length: this.depth }, () => ({ buf: d.alloc(this.maxBlocks * 512), list: d.alloc(PAGE) })));
    this.free.set(qid, Array.from({ length: this.depth }, (_, i) => i));
  }

  get outstanding(): number {
    let n = 0;
    for (const m of this.inflight.values()) n += m.size;
    return n;
  }

  /** Fills every queue to its depth and rings once per queue. */
  async submit(): Promise<void> {
    const d = this.n.driver;
    for (const qid of this.queues) {
      const q = d.queues.get(qid)!;
      const old = q.tail;
      const free = this.free.get(qid)!;
      let put = 0;
      while (free.length > 0) {
        const op = this.pick(qid, free[free.length - 1]);
        if (!op) break;
        free.pop();
        op.cid = d.put(qid, { opcode: op.write ? 0x01 : 0x02, nsid: 1, ...this.prps(op), cdw10: op.lba, cdw12: op.blocks - 1 });
        this.inflight.get(qid)!.set(op.cid, op);
        put++;
      }
      if (put > 0) await d.submit(qid, old);
    }
  }

  private pick(qid: number, slot: number): Op | undefined {
    for (let tries = 0; tries < 8; tries++) {
      const large = this.random() < 0.08;
      const blocks = large ? this.maxBlocks : 1 + Math.floor(this.random() * 16);
      const lba = Math.floor(this.random() * (this.n.blocks - blocks));
      let clear = true;
      for (let b = lba; b < lba + blocks && clear; b++) clear = this.busy[b] === 0;
      if (!clear) continue;
      this.busy.fill(1, lba, lba + blocks);
      const write = this.random() < 0.6;
      const { buf } = this.buffers.get(qid)![slot];
      const op: Op = { qid, cid: -1, write, lba, blocks, gen: write ? this.nextGen++ : 0, buf, slot, submittedAt: performance.now() };
      const bytes = this.n.driver.bytes(buf, blocks * 512);
      if (write) for (let i = 0; i < blocks; i++) blockPattern(lba + i, op.gen, bytes, i * 512);
      else bytes.fill(0xee);
      return op;
    }
    return undefined;
  }

  private prps(op: Op): { prp1: number; prp2: number } {
    const d = this.n.driver;
    const len = op.blocks * 512;
    if (len <= PAGE) return { prp1: op.buf, prp2: 0 };
    if (len <= 2 * PAGE) return { prp1: op.buf, prp2: op.buf + PAGE };
    const { list } = this.buffers.get(op.qid)![op.slot];
    const pages = Math.ceil(len / PAGE) - 1;
    for (let i = 0; i < pages; i++) d.view(list + i * 8, 8).setBigUint64(0, BigInt(op.buf + (i + 1) * PAGE), true);
    return { prp1: op.buf, prp2: list };
  }

  /** Reaps what every queue has posted (one head doorbell per queue); the count reaped. */
  async reap(): Promise<number> {
    const d = this.n.driver;
    let total = 0;
    for (const qid of this.queues) {
      const q = d.queues.get(qid)!;
      const before = q.head;
      let n = 0;
      while (!d.cqEmpty(qid)) {
        this.check(qid, await d.reap(qid, { ringHead: false }));
        n++;
      }
      if (n > 0) await d.ringHead(qid, before);
      total += n;
    }
    return total;
  }

  private check(qid: number, cqe: Cqe): void {
    const ops = this.inflight.get(qid)!;
    const op = ops.get(cqe.cid);
    if (!op) throw (this.failure = new Error(`queue ${qid}: completion of cid ${cqe.cid}, which is not in flight (completed twice, or never submitted)`));
    ops.delete(cqe.cid);
    if (cqe.status !== 0) throw (this.failure = new Error(`queue ${qid} cid ${cqe.cid} (${op.write ? 'write' : 'read'} ${op.lba}+${op.blocks}): status 0x${cqe.status.toString(16)}`));
    if (cqe.sqId !== qid) throw (this.failure = new Error(`queue ${qid} cid ${cqe.cid}: CQE names SQ ${cqe.sqId}`));
    const bytes = this.n.driver.bytes(op.buf, op.blocks * 512);
    if (op.write) {
      for (let i = 0; i < op.blocks; i++) this.generation[op.lba + i] = op.gen;
      this.writes++;
    } else {
      const want = new Uint8Array(512);
      for (let i = 0; i < op.blocks; i++) {
        // -1: a write a reset abandoned, which may or may not have landed.
        if (this.generation[op.lba + i] < 0) continue;
        blockPattern(op.lba + i, this.generation[op.lba + i], want, 0);
        const got = bytes.subarray(i * 512, (i + 1) * 512);
        if (!Buffer.from(got).equals(want)) throw (this.failure = new Error(`queue ${qid} cid ${cqe.cid}: block ${op.lba + i} reads wrong (want generation ${this.generation[op.lba + i]}, got bytes ${Buffer.from(got.subarray(0, 8)).toString('hex')})`));
      }
      this.reads++;
    }
    if (op.blocks === this.maxBlocks) this.largest++;
    this.busy.fill(0, op.lba, op.lba + op.blocks);
    this.free.get(qid)!.push(op.slot);
    this.completed++;
    this.completions.push(performance.now());
  }

  /** Completions already in guest memory and not reaped. */
  postedUnreaped(): number {
    const d = this.n.driver;
    let n = 0;
    for (const qid of this.queues) {
      const q = d.queues.get(qid)!;
      for (let head = q.head, phase = q.phase; n < 4096; ) {
        const dw3 = d.view(q.cq + head * 16 + 12, 4).getUint32(0, true);
        if (((dw3 >>> 16) & 1) !== phase) break;
        n++;
        head = (head + 1) % q.cqSize;
        if (head === 0) phase ^= 1;
      }
    }
    return n;
  }

  /** True while a transfer of the largest size is in flight. */
  get largeInFlight(): boolean {
    for (const m of this.inflight.values()) for (const op of m.values()) if (op.blocks === this.maxBlocks) return true;
    return false;
  }

  /** Reaps until nothing is in flight, for at most `timeoutMs`: a command lost fails here. */
  async finish(timeoutMs = 8000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.outstanding > 0) {
      if ((await this.reap()) === 0) {
        if (Date.now() > deadline) {
          const lost = [...this.inflight.values()].flatMap((m) => [...m.values()].map((o) => `q${o.qid}/cid ${o.cid} ${o.write ? 'W' : 'R'} ${o.lba}+${o.blocks}`));
          throw new Error(`${lost.length} command(s) never completed: ${lost.slice(0, 8).join(', ')}`);
        }
        await new Promise((r) => setTimeout(r, 1));
      }
    }
  }

  /** Forgets what was in flight (a controller reset abandoned it): those blocks' contents are unknown until written again. */
  abandon(): void {
    for (const [qid, ops] of this.inflight) {
      for (const op of ops.values()) {
        this.busy.fill(0, op.lba, op.lba + op.blocks);
        // A write a reset abandoned may or may not have reached the disk.
        if (op.write) for (let b = op.lba; b < op.lba + op.blocks; b++) this.generation[b] = -1;
      }
      ops.clear();
      this.free.set(qid, Array.from({ length: this.depth }, (_, i) => i));
    }
  }
}

/** A small deterministic PRNG (xorshift32). */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

/** Runs the workload until `stop()` holds (bounded), then until nothing is in flight. */
export async function pump(io: VerifiedIo, stop: () => boolean, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!stop()) {
    if (Date.now() > deadline) throw new Error('the workload never reached its condition');
    await io.submit();
    if ((await io.reap()) === 0) await new Promise((r) => setImmediate(r));
  }
  await io.finish();
}

