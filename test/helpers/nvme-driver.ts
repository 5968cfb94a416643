/**
 * An NVMe driver in the test process, speaking to a muser NVMe controller
 * through our own vfio-user client: it maps guest memory, enables the
 * controller, lays out admin and I/O queues, builds commands with PRP1,
 * PRP2 and PRP lists, rings doorbells by REGION_WRITE or through the
 * shadow doorbell buffer with EventIdx (as Linux does) or, once
 * `mapDoorbells()` mapped BAR0's doorbell page, by plain stores into it (as
 * a guest does when QEMU maps the page: no message), and reaps
 * completions by polling phase tags in guest memory.
 */
import { Client, EventFd, RegionCapId, closeFd, mapRegion, privateMemory, sharedMemory, type GuestMemory, type RegionMapping, type SparseMmapCap } from '../../src/client/index.js';
import { IrqIndex } from '../../src/index.js';
import { native } from '../../src/native/index.js';

export const GUEST_BASE = 0x1000_0000;
export const PAGE = 4096;
const BAR0 = 0;

export const REG = { CAP: 0x00, VS: 0x08, INTMS: 0x0c, INTMC: 0x10, CC: 0x14, CSTS: 0x1c, AQA: 0x24, ASQ: 0x28, ACQ: 0x30 } as const;
export const CC_ENABLE = 1 | (6 << 16) | (4 << 20);

/** A completion as the driver reads it. */
export interface Cqe {
  dw0: number;
  sqHead: number;
  sqId: number;
  cid: number;
  phase: number;
  /** Status field without the phase bit: SC | SCT << 8 | DNR << 14. */
  status: number;
  sc: number;
  sct: number;
}

/** Fields of a command to build. */
export interface Cmd {
  opcode: number;
  nsid?: number;
  prp1?: bigint | number;
  prp2?: bigint | number;
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
  cdw13?: number;
  cdw14?: number;
  cdw15?: number;
  /** Raw byte 1 of CDW0 (fuse, psdt). */
  flags?: number;
  cid?: number;
}

interface DriverQueue {
  id: number;
  sq: number;
  cq: number;
  size: number;
  cqSize: number;
  tail: number;
  head: number;
  phase: number;
  nextCid: number;
}

export interface DriverOptions {
  memory?: 'shared' | 'private';
  memorySize?: number;
  msix?: boolean;
}

/** A test NVMe driver. */
export class NvmeDriver {
  readonly queues = new Map<number, DriverQueue>();
  readonly vectors: EventFd[] = [];
  /** Doorbell register writes made (messages). */
  doorbellMessages = 0;
  /** Doorbells stored into the mapped doorbell page (no message). */
  doorbellStores = 0;
  /** Doorbells rung through their ioeventfd (no message), once {@link useIoeventfds} took them. */
  doorbellKicks = 0;
  /** The I/O queues' doorbell eventfds (SQ 1 tail, CQ 1 head, SQ 2 tail, ...), once {@link useIoeventfds} took them. */
  private ioFds: number[] | undefined;
  /** BAR0's doorbell page, once {@link mapDoorbells} mapped it. */
  private page: RegionMapping | undefined;
  /** Shadow doorbell and EventIdx buffers once configured. */
  dbbuf: { dbs: number; eis: number } | undefined;
  private next = GUEST_BASE;

  private constructor(
    public client: Client,
    readonly mem: GuestMemory,
  ) {}

  /** Follows the device to another server (live migration): maps the same memory there and routes the same vectors. */
  async attachTo(client: Client): Promise<void> {
    await client.dmaMap(GUEST_BASE, this.mem);
    await client.setBusMaster();
    if (this.vectors.length > 0) await client.setIrqEventfds(IrqIndex.MSIX, 0, this.vectors.map((e) => e.fd));
  }

  /** From now on, talk to `client`. */
  useClient(client: Client): void {
    this.client = client;
  }

  static async open(client: Client, o: DriverOptions = {}): Promise<NvmeDriver> {
    const size = o.memorySize ?? 8 * 1024 * 1024;
    const mem = o.memory === 'private' ? privateMemory(size) : sharedMemory(size, 'nvme-guest');
    await client.dmaMap(GUEST_BASE, mem);
    await client.setBusMaster();
    const d = new NvmeDriver(client, mem);
    if (o.msix ?? true) {
      const info = await client.irqInfo(IrqIndex.MSIX);
      for (let i = 0; i < info.count; i++) d.vectors.push(new EventFd());
      await client.setIrqEventfds(IrqIndex.MSIX, 0, d.vectors.map((e) => e.fd));
    }
    return d;
  }

  close(): void {
    for (const v of this.vectors) v.close();
    for (const fd of this.ioFds ?? []) native.close(fd);
    this.page?.unmap();
    this.mem.close();
  }

  /**
   * Maps BAR0's doorbell page as QEMU does (the region fd from
   * DEVICE_GET_REGION_INFO, at the sparse mmap area): from now on `ring`
   * stores into it instead of sending REGION_WRITE. A page mapped before
   * (of the controller before a migration) is unmapped.
   */
  async mapDoorbells(): Promise<void> {
    this.page?.unmap();
    this.page = undefined;
    const info = await this.client.regionInfo(BAR0);
    if (info.fd === undefined) throw new Error('BAR0 came without an fd: the controller was not made with mmapDoorbells');
    try {
      const sparse = info.caps.find((c) => c.id === RegionCapId.SPARSE_MMAP) as SparseMmapCap | undefined;
      const area = sparse?.areas.find((a) => a.offset === 0x1000);
      if (!area) throw new Error(`BAR0 has no mmap area at 0x1000: ${JSON.stringify(sparse)}`);
      this.page = mapRegion(info.fd, info.info.offset + area.offset, area.size);
    } finally {
      closeFd(info.fd);
    }
  }

  /**
   * Takes the I/O queues' doorbell eventfds (DEVICE_GET_REGION_IO_FDS) as a
   * VMM binds them: from now on an I/O queue's doorbell is an eventfd write,
   * a kick without its value.
   */
  async useIoeventfds(): Promise<void> {
    const r = await this.client.regionIoFds(BAR0);
    this.ioFds = r.fds;
  }

  // ---- memory ----

  alloc(len: number, align = PAGE): number {
    const addr = Math.ceil(this.next / align) * align;
    if (addr + len > GUEST_BASE + this.mem.bytes.length) throw new Error('test guest memory exhausted');
    this.next = addr + len;
    this.bytes(addr, len).fill(0);
    return addr;
  }

  bytes(addr: number, len: number): Uint8Array {
    return this.mem.bytes.subarray(addr - GUEST_BASE, addr - GUEST_BASE + len);
  }

  view(addr: number, len: number): DataView {
    const b = this.bytes(addr, len);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  // ---- registers ----

  async read32(offset: number): Promise<number> {
    return (await this.client.regionRead(BAR0, offset, 4)).readUInt32LE(0);
  }

  async read64(offset: number): Promise<bigint> {
    return (await this.client.regionRead(BAR0, offset, 8)).readBigUInt64LE(0);
  }

  async write32(offset: number, v: number): Promise<void> {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    await this.client.regionWrite(BAR0, offset, b);
  }

  async write64(offset: number, v: number | bigint): Promise<void> {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    await this.client.regionWrite(BAR0, offset, b);
  }

  async ring(index: number, value: number): Promise<void> {
    if (this.ioFds && index >= 2) {
      this.doorbellKicks++;
      native.eventfdWrite(this.ioFds[index - 2], 1);
      return;
    }
    if (this.page) {
      this.doorbellStores++;
      new DataView(this.page.bytes.buffer, this.page.bytes.byteOffset).setUint32(index * 4, value >>> 0, true);
      return;
    }
    this.doorbellMessages++;
    await this.write32(0x1000 + index * 4, value);
  }

  /**
   * Polls CSTS until (CSTS & mask) === value, for at most `timeoutMs`: bounded
   * by time, not by a count of polls, whose length a loaded machine stretches
   * past what a slow backend needs.
   */
  async waitCsts(mask: number, value: number, timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let c = 0;
    do {
      c = await this.read32(REG.CSTS);
      if ((c & mask) === value) return c;
      await new Promise((r) => setImmediate(r));
    } while (Date.now() < deadline);
    throw new Error(`CSTS never reached ${value} under mask ${mask} in ${timeoutMs} ms (last 0x${c.toString(16)})`);
  }

  /** Disables, sets the admin queue up and enables; resolves with CSTS. */
  async enable(o: { entries?: number; aqa?: number; cc?: number; wait?: boolean } = {}): Promise<number> {
    await this.write32(REG.CC, 0);
    await this.waitCsts(1, 0);
    const n = o.entries ?? 32;
    const sq = this.alloc(n * 64);
    const cq = this.alloc(n * 16);
    await this.write32(REG.AQA, o.aqa ?? (((n - 1) << 16) | (n - 1)));
    await this.write64(REG.ASQ, sq);
    await this.write64(REG.ACQ, cq);
    this.queues.set(0, { id: 0, sq, cq, size: n, cqSize: n, tail: 0, head: 0, phase: 1, nextCid: 0 });
    await this.write32(REG.CC, o.cc ?? CC_ENABLE);
    if (o.wait === false) return this.read32(REG.CSTS);
    return this.waitCsts(3, 1);
  }

  // ---- commands ----

  /** Writes a command into queue `qid`'s next slot; returns its cid. Does not ring. */
  put(qid: number, c: Cmd): number {
    const q = this.queues.get(qid)!;
    const cid = c.cid ?? q.nextCid++ & 0xffff;
    const v = this.view(q.sq + q.tail * 64, 64);
    new Uint8Array(v.buffer, v.byteOffset, 64).fill(0);
    v.setUint8(0, c.opcode);
    v.setUint8(1, c.flags ?? 0);
    v.setUint16(2, cid, true);
    v.setUint32(4, c.nsid ?? 0, true);
    v.setBigUint64(24, BigInt(c.prp1 ?? 0), true);
    v.setBigUint64(32, BigInt(c.prp2 ?? 0), true);
    v.setUint32(40, (c.cdw10 ?? 0) >>> 0, true);
    v.setUint32(44, (c.cdw11 ?? 0) >>> 0, true);
    v.setUint32(48, (c.cdw12 ?? 0) >>> 0, true);
    v.setUint32(52, (c.cdw13 ?? 0) >>> 0, true);
    v.setUint32(56, (c.cdw14 ?? 0) >>> 0, true);
    v.setUint32(60, (c.cdw15 ?? 0) >>> 0, true);
    q.tail = (q.tail + 1) % q.size;
    return cid;
  }

  /** Makes the new tail of queue `qid` known: shadow doorbell (ringing only if EventIdx asks) or register. */
  async submit(qid: number, old?: number): Promise<void> {
    const q = this.queues.get(qid)!;
    if (this.dbbuf && qid > 0) {
      const prev = old ?? q.tail;
      this.view(this.dbbuf.dbs + qid * 8, 4).setUint32(0, q.tail, true);
      const ei = this.view(this.dbbuf.eis + qid * 8, 4).getUint32(0, true);
      if (needEvent(ei, q.tail, prev)) await this.ring(qid * 2, q.tail);
      return;
    }
    await this.ring(qid * 2, q.tail);
  }

  /**
   * The next completion of queue `qid`, once its phase flips; consumes it
   * and (unless `ringHead` false) rings the head. Waits at most `timeoutMs`
   * (default 10 s): bounded by time, not by a count of polls, which a
   * loaded machine gets through before a controller in another process
   * (seeing a doorbell stored into its page) ran at all.
   */
  async reap(qid: number, o: { ringHead?: boolean; timeoutMs?: number } = {}): Promise<Cqe> {
    const q = this.queues.get(qid)!;
    const deadline = Date.now() + (o.timeoutMs ?? 10_000);
    for (;;) {
      const v = this.view(q.cq + q.head * 16, 16);
      const dw3 = v.getUint32(12, true);
      if (((dw3 >>> 16) & 1) === q.phase) {
        const statusField = (dw3 >>> 17) & 0x7fff;
        const cqe: Cqe = {
          dw0: v.getUint32(0, true),
          sqHead: v.getUint16(8, true),
          sqId: v.getUint16(10, true),
          cid: dw3 & 0xffff,
          phase: q.phase,
          status: statusField,
          sc: statusField & 0xff,
          sct: (statusField >> 8) & 7,
        };
        q.head = (q.head + 1) % q.cqSize;
        if (q.head === 0) q.phase ^= 1;
        if (o.ringHead ?? true) await this.ringHead(qid);
        return cqe;
      }
      if (Date.now() > deadline) throw new Error(`no completion on queue ${qid}`);
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Tells the controller the CQ head (shadow buffer with EventIdx, or register). */
  async ringHead(qid: number, prev?: number): Promise<void> {
    const q = this.queues.get(qid)!;
    if (this.dbbuf && qid > 0) {
      const old = prev ?? (q.head - 1 + q.cqSize) % q.cqSize;
      this.view(this.dbbuf.dbs + qid * 8 + 4, 4).setUint32(0, q.head, true);
      const ei = this.view(this.dbbuf.eis + qid * 8 + 4, 4).getUint32(0, true);
      if (needEvent(ei, q.head, old)) await this.ring(qid * 2 + 1, q.head);
      return;
    }
    await this.ring(qid * 2 + 1, q.head);
  }

  /** True when nothing is posted at the CQ head. */
  cqEmpty(qid: number): boolean {
    const q = this.queues.get(qid)!;
    const dw3 = this.view(q.cq + q.head * 16 + 12, 4).getUint32(0, true);
    return ((dw3 >>> 16) & 1) !== q.phase;
  }

  /** One command, start to finish. */
  async run(qid: number, c: Cmd): Promise<Cqe> {
    const q = this.queues.get(qid)!;
    const old = q.tail;
    this.put(qid, c);
    await this.submit(qid, old);
    return this.reap(qid);
  }

  admin(c: Cmd): Promise<Cqe> {
    return this.run(0, c);
  }

  // ---- admin helpers ----

  async identify(cns: number, nsid = 0, cdw11 = 0): Promise<{ cqe: Cqe; data: Uint8Array }> {
    const buf = this.alloc(PAGE);
    const cqe = await this.admin({ opcode: 0x06, nsid, prp1: buf, cdw10: cns, cdw11 });
    return { cqe, data: Buffer.from(this.bytes(buf, PAGE)) };
  }

  async createCq(qid: number, size: number, o: { vector?: number; ien?: boolean; base?: number; pc?: boolean } = {}): Promise<Cqe> {
    const base = o.base ?? this.alloc(size * 16);
    const cdw11 = ((o.vector ?? qid) << 16) | ((o.ien ?? true) ? 2 : 0) | ((o.pc ?? true) ? 1 : 0);
    const cqe = await this.admin({ opcode: 0x05, prp1: base, cdw10: ((size - 1) << 16) | qid, cdw11 });
    if (cqe.status === 0) this.queues.set(qid, { id: qid, sq: 0, cq: base, size: 0, cqSize: size, tail: 0, head: 0, phase: 1, nextCid: 0 });
    return cqe;
  }

  async createSq(qid: number, size: number, cqid: number, o: { base?: number } = {}): Promise<Cqe> {
    const base = o.base ?? this.alloc(size * 64);
    const cqe = await this.admin({ opcode: 0x01, prp1: base, cdw10: ((size - 1) << 16) | qid, cdw11: (cqid << 16) | 1 });
    if (cqe.status === 0) {
      const q = this.queues.get(qid);
      if (q) {
        q.sq = base;
        q.size = size;
      }
    }
    return cqe;
  }

  /** Set Features Number of Queues, then `count` queue pairs of `size` entries. */
  async createIoQueues(count: number, size = 64): Promise<void> {
    const nq = await this.admin({ opcode: 0x09, cdw10: 0x07, cdw11: ((count - 1) << 16) | (count - 1) });
    if (nq.status !== 0) throw new Error(`Set Features Number of Queues: status 0x${nq.status.toString(16)}`);
    for (let q = 1; q <= count; q++) {
      const c = await this.createCq(q, size);
      if (c.status !== 0) throw new Error(`create CQ ${q}: 0x${c.status.toString(16)}`);
      const s = await this.createSq(q, size, q);
      if (s.status !== 0) throw new Error(`create SQ ${q}: 0x${s.status.toString(16)}`);
    }
  }

  /** Doorbell Buffer Config with fresh zeroed buffers. */
  async configureShadowDoorbells(): Promise<Cqe> {
    const dbs = this.alloc(PAGE);
    const eis = this.alloc(PAGE);
    const cqe = await this.admin({ opcode: 0x7c, prp1: dbs, prp2: eis });
    if (cqe.status === 0) this.dbbuf = { dbs, eis };
    return cqe;
  }

  // ---- data ----

  /**
   * PRP1/PRP2 for `len` bytes at `addr` (page-aligned buffer, or `offset` into
   * the first page): a PRP list when more than two pages are needed.
   */
  prps(addr: number, len: number): { prp1: number; prp2: number } {
    const firstLen = Math.min(len, PAGE - (addr % PAGE));
    const rest = len - firstLen;
    if (rest <= 0) return { prp1: addr, prp2: 0 };
    const second = addr + firstLen;
    if (rest <= PAGE) return { prp1: addr, prp2: second };
    const pages = Math.ceil(rest / PAGE);
    const list = this.alloc(pages * 8, 8);
    for (let i = 0; i < pages; i++) this.view(list + i * 8, 8).setBigUint64(0, BigInt(second + i * PAGE), true);
    return { prp1: addr, prp2: list };
  }

  /** Read (opcode 2) or Write (1) of `blocks` 512-byte LBAs at `lba` through a fresh buffer. */
  async rw(qid: number, write: boolean, lba: number, blocks: number, data?: Uint8Array, nsid = 1): Promise<{ cqe: Cqe; data: Uint8Array }> {
    const len = blocks * 512;
    const buf = this.alloc(len);
    if (data) this.bytes(buf, len).set(data);
    const { prp1, prp2 } = this.prps(buf, len);
    const cqe = await this.run(qid, { opcode: write ? 0x01 : 0x02, nsid, prp1, prp2, cdw10: lba, cdw11: 0, cdw12: blocks - 1 });
    return { cqe, data: Buffer.from(this.bytes(buf, len)) };
  }
}

/** Linux's nvme_dbbuf_need_event: ring when EventIdx lies in [old, new). */
export function needEvent(eventIdx: number, next: number, old: number): boolean {
  return ((next - eventIdx - 1) & 0xffff) < ((next - old) & 0xffff);
}

