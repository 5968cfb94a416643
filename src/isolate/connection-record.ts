/**
 * The parent's record of one live connection: what a successor child must
 * replay to stand where the dead one stood. The requests that configure
 * the connection (VERSION, the DMA maps still mapped, SET_IRQS since the
 * last device reset), each with copies of its fds; the fds of frames
 * a child received and had not answered (a successor serves those frames
 * again from the journal, and needs their fds); the doorbell eventfds
 * the client was given (it keeps writing them: a successor must watch
 * those, and counts written meanwhile wait in them); and the region
 * memfds the client was given (it keeps them mapped and stores into
 * them: a successor must serve that memory, which holds what was stored
 * meanwhile).
 */
import { native } from '../native/index.js';
import { Command, DmaUnmapFlag, HEADER_SIZE } from '../protocol/constants.js';
import { decodeDmaMapRequest, decodeDmaUnmapRequest } from '../protocol/dma.js';
import { closeAll } from '../transport/channel.js';

/** A recorded request: its whole message and its fds. */
export interface RecordedRequest {
  readonly request: Buffer;
  readonly fds: number[];
}

/** Most SET_IRQS kept between resets (a client sets each index a few times). */
const MAX_IRQ_RECORDS = 4096;

/** What a successor replays to take a connection over. */
export class ConnectionRecord {
  private version: RecordedRequest | undefined;
  private readonly dmaMaps = new Map<string, RecordedRequest>();
  private irqs: RecordedRequest[] = [];
  private readonly held = new Map<number, number[]>();
  private readonly doorbellFds = new Map<number, number[]>();
  private readonly memoryFds = new Map<number, number[]>();

  /** Keeps the fds of frame `tag` (received, not answered). */
  hold(tag: number, fds: number[]): void {
    closeAll(this.held.get(tag));
    this.held.set(tag, fds);
  }

  /** Frame `tag` is answered and needs no record: its fds go. */
  release(tag: number): void {
    closeAll(this.held.get(tag));
    this.held.delete(tag);
  }

  /** Frame `tag` succeeded and configured the connection: record it, with the fds held for it. */
  commit(tag: number, request: Buffer): void {
    const fds = this.held.get(tag) ?? [];
    this.held.delete(tag);
    const entry = { request, fds };
    const command = request.readUInt16LE(2);
    const payload = request.subarray(HEADER_SIZE, request.readUInt32LE(4));
    if (command === Command.VERSION) {
      this.drop(this.version);
      this.version = entry;
    } else if (command === Command.DMA_MAP) {
      const m = decodeDmaMapRequest(payload);
      const key = `${m.address}:${m.size}`;
      this.drop(this.dmaMaps.get(key));
      this.dmaMaps.set(key, entry);
    } else if (command === Command.DMA_UNMAP) {
      const m = decodeDmaUnmapRequest(payload);
      if (m.flags & DmaUnmapFlag.ALL) for (const key of [...this.dmaMaps.keys()]) this.unmap(key);
      else this.unmap(`${m.address}:${m.size}`);
      this.drop(entry);
    } else if (command === Command.DEVICE_SET_IRQS) {
      if (this.irqs.length >= MAX_IRQ_RECORDS) this.drop(this.irqs.shift());
      this.irqs.push(entry);
    } else this.drop(entry);
  }

  /** The client got `fds`, the doorbell eventfds of `region` (kept until the connection ends). */
  doorbells(region: number, fds: number[]): void {
    closeAll(this.doorbellFds.get(region));
    this.doorbellFds.set(region, fds);
  }

  /** The doorbell eventfds the client holds, by region. */
  doorbellsByRegion(): ReadonlyMap<number, number[]> {
    return this.doorbellFds;
  }

  /** The client got `fds` (one memfd) to map region `region` (kept until the connection ends). */
  regionMemory(region: number, fds: number[]): void {
    closeAll(this.memoryFds.get(region));
    this.memoryFds.set(region, fds);
  }

  /** The region memfds the client may have mapped, by region. */
  regionMemoryByRegion(): ReadonlyMap<number, number[]> {
    return this.memoryFds;
  }

  /** The device was reset: the client sets its interrupts again. */
  dropIrqs(): void {
    for (const r of this.irqs) this.drop(r);
    this.irqs = [];
  }

  /** The requests to replay, in order: VERSION, the DMA maps, SET_IRQS. */
  requests(): RecordedRequest[] {
    return [...(this.version ? [this.version] : []), ...this.dmaMaps.values(), ...this.irqs];
  }

  /** Fds of frames received and not answered, by tag. */
  heldFds(): ReadonlyMap<number, number[]> {
    return this.held;
  }

  /** Open fds kept (for tests and leak checks). */
  get fdCount(): number {
    const count = (m: ReadonlyMap<number, number[]>): number => [...m.values()].reduce((n, f) => n + f.length, 0);
    return this.requests().reduce((n, r) => n + r.fds.length, 0) + count(this.held) + count(this.doorbellFds) + count(this.memoryFds);
  }

  /** Forgets everything (the connection ended). */
  clear(): void {
    this.drop(this.version);
    this.version = undefined;
    for (const r of this.dmaMaps.values()) this.drop(r);
    this.dmaMaps.clear();
    this.dropIrqs();
    for (const fds of this.held.values()) closeAll(fds);
    this.held.clear();
    for (const fds of this.doorbellFds.values()) closeAll(fds);
    this.doorbellFds.clear();
    for (const fds of this.memoryFds.values()) closeAll(fds);
    this.memoryFds.clear();
  }

  private unmap(key: string): void {
    this.drop(this.dmaMaps.get(key));
    this.dmaMaps.delete(key);
  }

  private drop(r: RecordedRequest | undefined): void {
    if (r) for (const fd of r.fds) if (fd >= 0) native.close(fd);
  }
}
