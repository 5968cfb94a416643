/**
 * A virtio driver in the test process, speaking to a muser device through
 * our own vfio-user client: it finds the virtio-pci capabilities in config
 * space, negotiates features, lays split virtqueues out in guest memory (a
 * memfd mapped with DMA_MAP, or fd-less memory served by DMA messages),
 * posts descriptor chains, rings doorbells by REGION_WRITE (replied or
 * posted), by ioeventfd or by a store into the notify page it mapped (a
 * device made with mmapDoorbells), and waits for used buffers on MSI-X eventfds.
 */
import { native } from '../../src/native/index.js';
import { Client, EventFd, RegionCapId, closeFd, mapRegion, privateMemory, sharedMemory, type GuestMemory, type RegionMapping, type SparseMmapCap } from '../../src/client/index.js';
import { IrqIndex } from '../../src/index.js';
import { CommonCfg, DescFlag, VirtioFeature, VirtioStatus, featureBit } from '../../src/virtio/index.js';

/** A buffer of a chain: guest address, length, device-writable or not. */
export interface Buf {
  addr: number;
  len: number;
  write?: boolean;
}

/** How the driver rings a doorbell. */
export type KickMode = 'message' | 'posted' | 'eventfd' | 'mapped';

/** Options for {@link VirtioDriver.open}. */
export interface DriverOptions {
  /** Guest memory with an fd (zero-copy on the device side) or without (DMA messages). Default shared. */
  memory?: 'shared' | 'private';
  memorySize?: number;
  /** Route MSI-X vectors to eventfds (default true); false leaves INTx. */
  msix?: boolean;
}

export interface VirtioCaps {
  common: number;
  notify: number;
  notifyMultiplier: number;
  isr: number;
  device: number | undefined;
  pciCfg: number;
  bar: number;
}

interface DriverQueue {
  index: number;
  size: number;
  desc: number;
  avail: number;
  used: number;
  nextAvail: number;
  lastUsed: number;
  freeHeads: number[];
  notifyOffset: number;
}

/** Guest IOVA where the driver maps its memory. */
export const GUEST_BASE = 0x1000_0000;
const CONFIG_REGION = 7;

/** A test virtio driver. */
export class VirtioDriver {
  readonly queues = new Map<number, DriverQueue>();
  readonly vectors: EventFd[] = [];
  /** ioeventfds by queue, once asked for. */
  doorbells: number[] | undefined;
  /** The notify page, once mapped (kick mode 'mapped'), and where it starts in the BAR. */
  private notifyPage: Promise<{ map: RegionMapping; offset: number }> | undefined;
  private next: number;

  private constructor(
    public client: Client,
    readonly mem: GuestMemory,
    readonly caps: VirtioCaps,
    readonly numQueues: number,
  ) {
    this.next = GUEST_BASE;
  }

  /** Maps guest memory, finds the capabilities, routes MSI-X vectors. */
  static async open(client: Client, options: DriverOptions = {}): Promise<VirtioDriver> {
    const size = options.memorySize ?? 4 * 1024 * 1024;
    const mem = options.memory === 'private' ? privateMemory(size) : sharedMemory(size, 'virtio-guest');
    await client.dmaMap(GUEST_BASE, mem);
    // Memory space and Bus Master Enable, as a guest's PCI core sets them before DMA.
    await client.regionWrite(CONFIG_REGION, 4, Buffer.from([0x06, 0x00]));
    const caps = await findCaps(client);
    const numQueues = (await client.regionRead(caps.bar, caps.common + CommonCfg.NUM_QUEUES, 2)).readUInt16LE(0);
    const d = new VirtioDriver(client, mem, caps, numQueues);
    if (options.msix ?? true) {
      const info = await client.irqInfo(IrqIndex.MSIX);
      for (let i = 0; i < info.count; i++) d.vectors.push(new EventFd());
      await client.setIrqEventfds(IrqIndex.MSIX, 0, d.vectors.map((e) => e.fd));
    }
    return d;
  }

  /**
   * Follows the device to another server (after live migration): maps the
   * same guest memory there and routes the same MSI-X eventfds.
   */
  async attachTo(client: Client): Promise<void> {
    await client.dmaMap(GUEST_BASE, this.mem);
    await client.regionWrite(CONFIG_REGION, 4, Buffer.from([0x06, 0x00]));
    if (this.vectors.length > 0) await client.setIrqEventfds(IrqIndex.MSIX, 0, this.vectors.map((e) => e.fd));
  }

  /** From now on, talk to `client` (its doorbell eventfds are fetched anew). */
  useClient(client: Client): void {
    this.client = client;
    for (const fd of this.doorbells ?? []) native.close(fd);
    this.doorbells = undefined;
  }

  /** Releases eventfds and guest memory (the connection stays). */
  close(): void {
    for (const v of this.vectors) v.close();
    for (const fd of this.doorbells ?? []) native.close(fd);
    void this.notifyPage?.then((p) => p.map.unmap(), () => undefined);
    this.mem.close();
  }

  /** Maps the notify area's page as QEMU does (the BAR's fd at its sparse mmap area). */
  private async mapNotify(): Promise<{ map: RegionMapping; offset: number }> {
    const info = await this.client.regionInfo(this.caps.bar);
    if (info.fd === undefined) throw new Error('the virtio BAR came without an fd: the device was not made with mmapDoorbells');
    try {
      const sparse = info.caps.find((c) => c.id === RegionCapId.SPARSE_MMAP) as SparseMmapCap | undefined;
      const area = sparse?.areas.find((a) => this.caps.notify >= a.offset && this.caps.notify < a.offset + a.size);
      if (!area) throw new Error(`no mmap area holds the notify area at 0x${this.caps.notify.toString(16)}`);
      return { map: mapRegion(info.fd, info.info.offset + area.offset, area.size), offset: area.offset };
    } finally {
      closeFd(info.fd);
    }
  }

  // ---- registers ----

  async readCommon(offset: number, size: 1 | 2 | 4 | 8): Promise<number> {
    const b = await this.client.regionRead(this.caps.bar, this.caps.common + offset, size);
    return size === 8 ? Number(b.readBigUInt64LE(0)) : b.readUIntLE(0, size);
  }

  async writeCommon(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void> {
    const b = Buffer.alloc(size);
    if (size === 8) b.writeBigUInt64LE(BigInt(value));
    else b.writeUIntLE(Number(value), 0, size);
    await this.client.regionWrite(this.caps.bar, this.caps.common + offset, b);
  }

  status(): Promise<number> {
    return this.readCommon(CommonCfg.DEVICE_STATUS, 1);
  }

  setStatus(v: number): Promise<void> {
    return this.writeCommon(CommonCfg.DEVICE_STATUS, 1, v);
  }

  async readConfig(offset: number, size: number): Promise<Buffer> {
    if (this.caps.device === undefined) throw new Error('no device config');
    return this.client.regionRead(this.caps.bar, this.caps.device + offset, size);
  }

  async deviceFeatures(): Promise<bigint> {
    let f = 0n;
    for (const sel of [0, 1]) {
      await this.writeCommon(CommonCfg.DEVICE_FEATURE_SELECT, 4, sel);
      f |= BigInt(await this.readCommon(CommonCfg.DEVICE_FEATURE, 4)) << BigInt(32 * sel);
    }
    return f;
  }

  async writeDriverFeatures(f: bigint): Promise<void> {
    for (const sel of [0, 1]) {
      await this.writeCommon(CommonCfg.DRIVER_FEATURE_SELECT, 4, sel);
      await this.writeCommon(CommonCfg.DRIVER_FEATURE, 4, Number((f >> BigInt(32 * sel)) & 0xffffffffn));
    }
  }

  /**
   * Reset, ACKNOWLEDGE, DRIVER, features (`choose` picks from the offer;
   * default: all offered), FEATURES_OK. Returns what was accepted and the status read back.
   */
  async negotiate(choose: (offered: bigint) => bigint = (o) => o): Promise<{ offered: bigint; features: bigint; status: number }> {
    await this.setStatus(0);
    await this.setStatus(VirtioStatus.ACKNOWLEDGE);
    await this.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
    const offered = await this.deviceFeatures();
    const features = choose(offered);
    await this.writeDriverFeatures(features);
    await this.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK);
    return { offered, features, status: await this.status() };
  }

  /** Sets a queue up in guest memory (vector = queue index + 1, the config vector being 0) and enables it. */
  async setupQueue(index: number, size?: number, options: { vector?: number; enable?: boolean } = {}): Promise<DriverQueue> {
    await this.writeCommon(CommonCfg.QUEUE_SELECT, 2, index);
    const max = await this.readCommon(CommonCfg.QUEUE_SIZE, 2);
    const n = size ?? max;
    await this.writeCommon(CommonCfg.QUEUE_SIZE, 2, n);
    const desc = this.alloc(16 * n, 16);
    const avail = this.alloc(6 + 2 * n, 2);
    const used = this.alloc(6 + 8 * n, 4);
    // Fresh rings start zeroed (memory may be reused after a rewind).
    this.bytes(desc, used + 6 + 8 * n - desc).fill(0);
    await this.writeCommon(CommonCfg.QUEUE_DESC, 8, desc);
    await this.writeCommon(CommonCfg.QUEUE_DRIVER, 8, avail);
    await this.writeCommon(CommonCfg.QUEUE_DEVICE, 8, used);
    await this.writeCommon(CommonCfg.QUEUE_MSIX_VECTOR, 2, options.vector ?? index + 1);
    const notifyOff = await this.readCommon(CommonCfg.QUEUE_NOTIFY_OFF, 2);
    if (options.enable ?? true) await this.writeCommon(CommonCfg.QUEUE_ENABLE, 2, 1);
    const q: DriverQueue = {
      index,
      size: n,
      desc,
      avail,
      used,
      nextAvail: 0,
      lastUsed: 0,
      freeHeads: Array.from({ length: n }, (_, i) => i),
      notifyOffset: this.caps.notify + notifyOff * this.caps.notifyMultiplier,
    };
    this.queues.set(index, q);
    return q;
  }

  /** Negotiates everything offered (or `choose`), sets up `queues` queues, DRIVER_OK. */
  async start(queues = 1, choose?: (offered: bigint) => bigint, size?: number): Promise<bigint> {
    const { features, status } = await this.negotiate(choose);
    if (!(status & VirtioStatus.FEATURES_OK)) throw new Error(`FEATURES_OK refused (status 0x${status.toString(16)})`);
    await this.writeCommon(CommonCfg.CONFIG_MSIX_VECTOR, 2, 0);
    for (let i = 0; i < queues; i++) await this.setupQueue(i, size);
    await this.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK);
    return features;
  }

  // ---- guest memory ----

  /** Allocates guest memory (bump allocator); returns its guest address. */
  alloc(len: number, align = 8): number {
    const at = Math.ceil(this.next / align) * align;
    if (at + len > GUEST_BASE + this.mem.bytes.length) throw new Error('guest memory exhausted');
    this.next = at + len;
    return at;
  }

  /** Where the allocator stands, to rewind to later. */
  mark(): number {
    return this.next;
  }

  /** Frees everything allocated since `mark` (buffers of finished requests). */
  rewind(mark: number): void {
    this.next = mark;
  }

  /** The driver's own view of guest memory at a guest address. */
  bytes(addr: number, len: number): Uint8Array {
    return this.mem.bytes.subarray(addr - GUEST_BASE, addr - GUEST_BASE + len);
  }

  /** Allocates a buffer holding `data`. */
  put(data: Uint8Array, align = 8): number {
    const addr = this.alloc(data.length, align);
    this.bytes(addr, data.length).set(data);
    return addr;
  }

  private view(addr: number, len: number): DataView {
    const b = this.bytes(addr, len);
    return new DataView(b.buffer, b.byteOffset, b.length);
  }

  // ---- rings ----

  /** Writes descriptor `i` of a table at `table`. */
  writeDesc(table: number, i: number, d: { addr: number | bigint; len: number; flags: number; next: number }): void {
    const v = this.view(table + 16 * i, 16);
    v.setBigUint64(0, BigInt(d.addr), true);
    v.setUint32(8, d.len >>> 0, true);
    v.setUint16(12, d.flags, true);
    v.setUint16(14, d.next, true);
  }

  /**
   * Posts a chain (or, with `indirect`, one descriptor pointing at a table
   * holding it); publishes it in the avail ring. Returns the head.
   */
  post(qi: number, bufs: Buf[], options: { indirect?: boolean } = {}): number {
    const q = this.queue(qi);
    let head: number;
    if (options.indirect) {
      const table = this.alloc(16 * bufs.length, 16);
      bufs.forEach((b, i) => this.writeDesc(table, i, { addr: b.addr, len: b.len, flags: (b.write ? DescFlag.WRITE : 0) | (i + 1 < bufs.length ? DescFlag.NEXT : 0), next: i + 1 }));
      head = this.takeHead(q);
      this.writeDesc(q.desc, head, { addr: table, len: 16 * bufs.length, flags: DescFlag.INDIRECT, next: 0 });
    } else {
      const heads = bufs.map(() => this.takeHead(q));
      bufs.forEach((b, i) => this.writeDesc(q.desc, heads[i], { addr: b.addr, len: b.len, flags: (b.write ? DescFlag.WRITE : 0) | (i + 1 < bufs.length ? DescFlag.NEXT : 0), next: heads[i + 1] ?? 0 }));
      head = heads[0];
    }
    this.publish(qi, head);
    return head;
  }

  /** Puts `head` in the next avail slot and bumps avail.idx. */
  publish(qi: number, head: number): void {
    const q = this.queue(qi);
    const v = this.view(q.avail, 6 + 2 * q.size);
    v.setUint16(4 + 2 * (q.nextAvail % q.size), head, true);
    q.nextAvail = (q.nextAvail + 1) & 0xffff;
    v.setUint16(2, q.nextAvail, true);
  }

  /** Sets avail.idx directly (for hostile tests). */
  setAvailIdx(qi: number, idx: number): void {
    const q = this.queue(qi);
    this.view(q.avail, 4).setUint16(2, idx & 0xffff, true);
    q.nextAvail = idx & 0xffff;
  }

  /** avail.flags (NO_INTERRUPT) and used_event. */
  setAvailFlags(qi: number, flags: number): void {
    this.view(this.queue(qi).avail, 2).setUint16(0, flags, true);
  }

  setUsedEvent(qi: number, idx: number): void {
    const q = this.queue(qi);
    this.view(q.avail + 4 + 2 * q.size, 2).setUint16(0, idx & 0xffff, true);
  }

  /** used.idx, used.flags and avail_event as the device wrote them. */
  usedState(qi: number): { idx: number; flags: number; availEvent: number } {
    const q = this.queue(qi);
    const v = this.view(q.used, 6 + 8 * q.size);
    return { flags: v.getUint16(0, true), idx: v.getUint16(2, true), availEvent: v.getUint16(4 + 8 * q.size, true) };
  }

  /** Rings queue `qi`'s doorbell. */
  async kick(qi: number, mode: KickMode = 'message'): Promise<void> {
    const q = this.queue(qi);
    const data = Buffer.alloc(2);
    data.writeUInt16LE(qi);
    if (mode === 'message') await this.client.regionWrite(this.caps.bar, q.notifyOffset, data);
    else if (mode === 'posted') this.client.postRegionWrite(this.caps.bar, q.notifyOffset, data);
    else if (mode === 'mapped') {
      this.notifyPage ??= this.mapNotify();
      const p = await this.notifyPage;
      new DataView(p.map.bytes.buffer, p.map.bytes.byteOffset).setUint16(q.notifyOffset - p.offset, qi, true);
    } else {
      if (!this.doorbells) {
        const r = await this.client.regionIoFds(this.caps.bar);
        this.doorbells = r.fds;
      }
      native.eventfdWrite(this.doorbells[qi], 1);
    }
  }

  /** Stores `value` (`width` bytes) at `offset` of the mapped notify page, as a hostile guest may. */
  async storeNotify(offset: number, value: number, width: 2 | 4): Promise<void> {
    this.notifyPage ??= this.mapNotify();
    const p = await this.notifyPage;
    const v = new DataView(p.map.bytes.buffer, p.map.bytes.byteOffset);
    const at = this.caps.notify - p.offset + offset;
    if (width === 2) v.setUint16(at, value, true);
    else v.setUint32(at, value >>> 0, true);
  }

  /** Used entries published since the last call (no waiting). */
  takeUsed(qi: number): { id: number; len: number }[] {
    const q = this.queue(qi);
    const v = this.view(q.used, 6 + 8 * q.size);
    const idx = v.getUint16(2, true);
    const out: { id: number; len: number }[] = [];
    while (q.lastUsed !== idx) {
      const at = 4 + 8 * (q.lastUsed % q.size);
      out.push({ id: v.getUint32(at, true), len: v.getUint32(at + 4, true) });
      q.lastUsed = (q.lastUsed + 1) & 0xffff;
    }
    // As Linux does with EVENT_IDX: ask for an interrupt at the next used buffer.
    this.view(q.avail + 4 + 2 * q.size, 2).setUint16(0, q.lastUsed, true);
    return out;
  }

  /** Used entries published since the last call, their chains freed (no waiting). */
  reap(qi: number): { id: number; len: number }[] {
    const q = this.queue(qi);
    const got = this.takeUsed(qi);
    for (const u of got) this.freeChain(q, u.id);
    return got;
  }

  /** Waits (on the queue's MSI-X vector) until `count` used entries arrived; frees their heads. */
  async waitUsed(qi: number, count = 1, timeoutMs = 5000): Promise<{ id: number; len: number }[]> {
    const q = this.queue(qi);
    const got: { id: number; len: number }[] = [];
    const vector = this.vectors[qi + 1];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = vector?.total ?? 0;
      got.push(...this.takeUsed(qi));
      if (got.length >= count) break;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`queue ${qi}: ${got.length} of ${count} used buffers after ${timeoutMs} ms`);
      if (vector) await vector.waitFor(seen + 1, left).catch(() => undefined);
      else await new Promise((r) => setTimeout(r, 5));
    }
    for (const u of got) this.freeChain(q, u.id);
    return got;
  }

  /** Posts, kicks and waits for one chain. */
  async roundTrip(qi: number, bufs: Buf[], options: { indirect?: boolean; kick?: KickMode } = {}): Promise<{ id: number; len: number }> {
    const head = this.post(qi, bufs, options);
    await this.kick(qi, options.kick);
    const used = await this.waitUsed(qi, 1);
    if (used[0].id !== head) throw new Error(`used id ${used[0].id}, posted head ${head}`);
    return used[0];
  }

  private queue(qi: number): DriverQueue {
    const q = this.queues.get(qi);
    if (!q) throw new Error(`queue ${qi} is not set up`);
    return q;
  }

  private takeHead(q: DriverQueue): number {
    const h = q.freeHeads.shift();
    if (h === undefined) throw new Error(`queue ${q.index} has no free descriptors`);
    return h;
  }

  /** Returns a chain's descriptors to the free list (following NEXT in the direct table). */
  private freeChain(q: DriverQueue, head: number): void {
    let i = head;
    for (let n = 0; n < q.size; n++) {
      if (i >= q.size || q.freeHeads.includes(i)) return;
      q.freeHeads.push(i);
      const v = this.view(q.desc + 16 * i, 16);
      if (!(v.getUint16(12, true) & DescFlag.NEXT)) return;
      i = v.getUint16(14, true);
    }
  }
}

/** Every feature offered except the ones named. */
export function without(...bits: number[]): (offered: bigint) => bigint {
  return (o) => bits.reduce((f, b) => f & ~featureBit(b), o);
}

/** VERSION_1 only plus the named bits. */
export function only(...bits: number[]): (offered: bigint) => bigint {
  return (o) => bits.reduce((f, b) => f | (o & featureBit(b)), featureBit(VirtioFeature.VERSION_1));
}

/** Walks config space and decodes the virtio vendor capabilities. */
export async function findCaps(client: Client): Promise<VirtioCaps> {
  const cfg = await client.regionRead(CONFIG_REGION, 0, 256);
  const caps: Partial<VirtioCaps> = {};
  let at = cfg[0x34];
  for (let n = 0; at !== 0 && n < 48; n++) {
    if (cfg[at] === 0x09) {
      const type = cfg[at + 3];
      const bar = cfg[at + 4];
      const offset = cfg.readUInt32LE(at + 8);
      if (type === 1) caps.common = offset;
      else if (type === 2) {
        caps.notify = offset;
        caps.notifyMultiplier = cfg.readUInt32LE(at + 16);
      } else if (type === 3) caps.isr = offset;
      else if (type === 4) caps.device = offset;
      else if (type === 5) caps.pciCfg = at;
      if (type !== 5) caps.bar = bar;
    }
    at = cfg[at + 1];
  }
  if (caps.common === undefined || caps.notify === undefined || caps.isr === undefined || caps.pciCfg === undefined || caps.bar === undefined) {
    throw new Error(`virtio capabilities missing: ${JSON.stringify(caps)}`);
  }
  return caps as VirtioCaps;
}
