/**
 * The client end of vfio-user: connect, negotiate, and every command as a
 * typed method. It lends the device memory for DMA (serving the device's
 * DMA_READ / DMA_WRITE for memory without an fd) and receives IRQ eventfds.
 */
import { getSystemErrorName } from 'node:util';
import { Channel, closeAll } from '../transport/channel.js';
import { connectSocket } from '../transport/connect.js';
import type { Frame } from '../transport/framer.js';
import { Command, DeviceFeatureFlag, DmaMapFlag, DmaUnmapFlag, HEADER_SIZE, HeaderFlag, IrqSetFlag } from '../protocol/constants.js';
import { decodeHeader, encodeErrorReply, encodeMessage, encodeReply, type Header } from '../protocol/header.js';
import { decodeVersion, encodeVersion, type VersionCapabilities } from '../protocol/version.js';
import { decodeDeviceInfoReply, encodeDeviceInfoRequest, type DeviceInfo } from '../protocol/device-info.js';
import { decodeRegionInfoReply, encodeRegionInfoRequest, type RegionInfoReply } from '../protocol/region-info.js';
import { decodeRegionIoFdsReply, encodeRegionIoFdsRequest, type RegionIoFdsReply } from '../protocol/region-io-fds.js';
import { decodeIrqInfoReply, encodeIrqInfoRequest, encodeSetIrqsRequest, type IrqInfo } from '../protocol/irq.js';
import { decodeRegionReadReply, encodeRegionReadRequest, encodeRegionWriteRequest } from '../protocol/region-access.js';
import { encodeRegionWriteMultiRequest, type RegionWriteOne } from '../protocol/region-write-multi.js';
import { encodeDmaMapRequest, encodeDmaUnmapRequest } from '../protocol/dma.js';
import { decodeDmaReadRequest, decodeDmaWriteRequest, encodeDmaReadReply, encodeDmaWriteReply } from '../protocol/dma-access.js';
import { decodeDeviceFeatureReply, encodeDeviceFeatureRequest, type DeviceFeature, type FeatureData } from '../protocol/device-feature.js';
import { decodeMigDataReadReply, encodeMigDataReadRequest, encodeMigDataWriteRequest } from '../protocol/migration-data.js';
import type { GuestMemory } from './guest-memory.js';

/**
 * An error reply from the server: `REGION_READ of region 0 at 0x5 (2 bytes)
 * refused: EINVAL`. A vfio-user error reply carries only an errno; the
 * server logs its reason (muser warns about refused region accesses).
 */
export class ClientError extends Error {
  /**
   * @param command the refused command's number
   * @param errno the errno of the error reply
   * @param what the request, for the message (`of region 0 at 0x5 (2 bytes)`)
   */
  constructor(
    readonly command: number,
    readonly errno: number,
    what?: string,
  ) {
    super(`${Command[command] ?? `command ${command}`}${what ? ` ${what}` : ''} refused: ${errnoName(errno)}`);
    this.name = 'ClientError';
  }
}

/** No reply came in time; the message says to which request. */
export class ReplyTimeout extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(
    readonly command: number,
    readonly msgId: number,
    readonly timeoutMs: number,
  ) {
    super(`no reply to ${commandName(command)} (msg_id ${msgId}) in ${timeoutMs} ms`);
    this.name = 'ReplyTimeout';
  }
}

/** `EINVAL` for 22; `errno 4242` for a number Linux does not name. */
function errnoName(errno: number): string {
  let name = '';
  try {
    name = getSystemErrorName(-errno);
  } catch {
    // not a negative integer: named below
  }
  return /^E[A-Z0-9]+$/.test(name) ? name : `errno ${errno}`;
}

/** Rethrows a ClientError with what the request was; anything else as it is. */
function withContext(what: string): (e: unknown) => never {
  return (e) => {
    throw e instanceof ClientError ? new ClientError(e.command, e.errno, what) : e;
  };
}

/** Describes a region access for an error message. */
function regionAccess(region: number, offset: number, count: number): string {
  return `of region ${region} at 0x${offset.toString(16)} (${count} byte${count === 1 ? '' : 's'})`;
}

/** Options for {@link Client.connect}. */
export interface ClientOptions {
  /** Capabilities offered in VERSION. */
  capabilities?: VersionCapabilities;
  /**
   * Milliseconds to wait for the connection (while the server's backlog is
   * full) and then for each reply (default 5000).
   */
  timeoutMs?: number;
}

/** A message from the server that fits no request in flight: the two ends are out of step. */
export interface UnexpectedMessage {
  header: Header;
  /** Why it was unexpected. */
  reason: string;
}

/** A received reply. */
export interface ReplyFrame {
  header: Header;
  payload: Buffer;
  fds: number[];
}

interface Pending {
  command: number;
  msgId: number;
  resolve(r: ReplyFrame): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

interface LentMemory {
  address: number;
  memory: GuestMemory;
}

const DEFAULT_CAPS: VersionCapabilities = {
  maxMsgFds: 16,
  maxDataXferSize: 1024 * 1024,
  pgsizes: 4096,
  maxDmaMaps: 65535,
  writeMultiple: true,
};

/** Config space region index and its command register (Bus Master Enable is bit 2). */
const CONFIG_REGION = 7;
const PCI_COMMAND = 0x04;
const PCI_COMMAND_MASTER = 0x0004;

/** A connection to a vfio-user server. */
export class Client {
  /** What the server answered to VERSION. */
  server: VersionCapabilities = {};
  /** What this client offered in VERSION. */
  offered: VersionCapabilities = {};
  /** The server's VERSION reply: its header and the version it speaks. */
  versionReply: { header: Header; major: number; minor: number } | undefined;
  /** DMA_READ / DMA_WRITE requests served, for tests. */
  dmaRequestsServed = 0;
  /**
   * Messages that fit no request in flight: a reply to none (a second
   * reply, an unknown msg_id), a reply naming another command than its
   * request, a command other than DMA_READ / DMA_WRITE. The caller may drain
   * it. A late reply to a request that timed out is not counted.
   */
  readonly unexpectedMessages: UnexpectedMessage[] = [];
  private readonly channel: Channel;
  private readonly pending = new Map<number, Pending>();
  private readonly lent: LentMemory[] = [];
  /** msg_ids of requests that timed out, whose replies may still come. */
  private readonly timedOut = new Set<number>();
  private nextId = 0;
  private closed: Promise<void>;
  private markClosed!: () => void;

  private constructor(
    fd: number,
    private readonly timeoutMs: number,
  ) {
    this.closed = new Promise((r) => (this.markClosed = r));
    this.channel = new Channel(fd, { onFrame: (f) => this.onFrame(f), onClose: (e) => this.onClose(e) });
  }

  /**
   * Connects to `path` and negotiates the protocol version. Rejects at once
   * when nothing listens there, and after `timeoutMs` when the server does
   * not accept the connection (its backlog is full) or does not answer VERSION.
   */
  static async connect(path: string, options: ClientOptions = {}): Promise<Client> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const client = new Client(await connectSocket(path, { timeoutMs }), timeoutMs);
    try {
      await client.negotiate({ ...DEFAULT_CAPS, ...options.capabilities });
    } catch (e) {
      client.close();
      // Say what came instead of the VERSION reply, if anything did.
      if (e instanceof Error && client.unexpectedMessages.length > 0) e.message += `; instead: ${client.unexpectedMessages.map((u) => u.reason).join('; ')}`;
      throw e;
    }
    return client;
  }

  /** Resolves when the connection has ended. */
  get whenClosed(): Promise<void> {
    return this.closed;
  }

  /** True once the connection ended. */
  get isClosed(): boolean {
    return this.channel.isClosed;
  }

  /** Closes the connection. */
  close(): void {
    this.channel.close();
  }

  /**
   * Sends a raw command and waits for the reply. Rejects with ClientError on
   * an error reply. The reply's fds belong to the caller.
   */
  request(command: number, payload: Buffer, fds?: readonly number[]): Promise<ReplyFrame> {
    return new Promise((resolve, reject) => {
      if (this.channel.isClosed) return reject(new Error(`connection closed: cannot send ${commandName(command)}`));
      const msgId = this.allocId();
      const timer = setTimeout(() => {
        this.pending.delete(msgId);
        this.timedOut.add(msgId);
        reject(new ReplyTimeout(command, msgId, this.timeoutMs));
      }, this.timeoutMs);
      this.pending.set(msgId, { command, msgId, resolve, reject, timer });
      this.channel.send(encodeMessage({ msgId, command }, payload), fds);
    });
  }

  /** Sends raw bytes as they are (for tests of malformed input). */
  sendRaw(bytes: Buffer, fds?: readonly number[]): void {
    this.channel.send(bytes, fds);
  }

  /** Sends a command with the no-reply flag. */
  post(command: number, payload: Buffer, fds?: readonly number[]): void {
    this.channel.send(encodeMessage({ msgId: this.allocId(), command, flags: HeaderFlag.NO_REPLY }, payload), fds);
  }

  private async negotiate(caps: VersionCapabilities): Promise<void> {
    this.offered = caps;
    const r = await this.request(Command.VERSION, encodeVersion({ major: 0, minor: 1, capabilities: caps }));
    const v = decodeVersion(r.payload);
    this.versionReply = { header: r.header, major: v.major, minor: v.minor };
    this.server = v.capabilities;
  }

  /** DEVICE_GET_INFO. */
  async deviceInfo(): Promise<DeviceInfo> {
    const r = await this.request(Command.DEVICE_GET_INFO, encodeDeviceInfoRequest({ argsz: 16 }));
    return decodeDeviceInfoReply(r.payload);
  }

  /** DEVICE_GET_REGION_INFO, retried with a larger argsz when the caps do not fit. The fd, if any, is the caller's. */
  async regionInfo(index: number): Promise<RegionInfoReply & { fd: number | undefined }> {
    let argsz = 32;
    for (;;) {
      const r = await this.request(Command.DEVICE_GET_REGION_INFO, encodeRegionInfoRequest({ argsz, flags: 0, index, capOffset: 0, size: 0, offset: 0 }));
      const reply = decodeRegionInfoReply(r.payload);
      if (reply.info.argsz > argsz) {
        closeAll(r.fds);
        argsz = reply.info.argsz;
        continue;
      }
      closeAll(r.fds.slice(1));
      return { ...reply, fd: r.fds[0] };
    }
  }

  /** DEVICE_GET_REGION_IO_FDS. The fds are the caller's. */
  async regionIoFds(index: number): Promise<RegionIoFdsReply & { fds: number[] }> {
    let argsz = 16;
    for (;;) {
      const r = await this.request(Command.DEVICE_GET_REGION_IO_FDS, encodeRegionIoFdsRequest({ argsz, flags: 0, index, count: 0 }));
      const reply = decodeRegionIoFdsReply(r.payload);
      if (reply.argsz > argsz) {
        closeAll(r.fds);
        argsz = reply.argsz;
        continue;
      }
      return { ...reply, fds: r.fds };
    }
  }

  /** DEVICE_GET_IRQ_INFO. */
  async irqInfo(index: number): Promise<IrqInfo> {
    const r = await this.request(Command.DEVICE_GET_IRQ_INFO, encodeIrqInfoRequest({ argsz: 16, flags: 0, index, count: 0 }));
    return decodeIrqInfoReply(r.payload);
  }

  /** DEVICE_SET_IRQS with any flags; `fds` travel as SCM_RIGHTS (borrowed). */
  async setIrqs(index: number, flags: number, start: number, count: number, data?: Uint8Array, fds?: readonly number[]): Promise<void> {
    const payload = encodeSetIrqsRequest({ argsz: 20 + (data?.length ?? 0), flags, index, start, count, data });
    await this.request(Command.DEVICE_SET_IRQS, payload, fds);
  }

  /** Routes vectors [start, start+fds.length) of `index` to eventfds. */
  setIrqEventfds(index: number, start: number, fds: readonly number[]): Promise<void> {
    return this.setIrqs(index, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, start, fds.length, undefined, fds);
  }

  /** Disables every vector of `index`. */
  disableIrqs(index: number): Promise<void> {
    return this.setIrqs(index, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 0, 0);
  }

  /** Masks or unmasks vectors of `index`. */
  maskIrqs(index: number, start: number, count: number, mask: boolean): Promise<void> {
    return this.setIrqs(index, IrqSetFlag.DATA_NONE | (mask ? IrqSetFlag.ACTION_MASK : IrqSetFlag.ACTION_UNMASK), start, count);
  }

  /** REGION_READ. */
  async regionRead(region: number, offset: number, count: number): Promise<Buffer> {
    const r = await this.request(Command.REGION_READ, encodeRegionReadRequest({ offset, region, count })).catch(withContext(regionAccess(region, offset, count)));
    const m = decodeRegionReadReply(r.payload);
    return Buffer.from(m.data.buffer, m.data.byteOffset, m.data.length);
  }

  /** REGION_WRITE. */
  async regionWrite(region: number, offset: number, data: Uint8Array): Promise<void> {
    await this.request(Command.REGION_WRITE, encodeRegionWriteRequest({ offset, region, count: data.length, data })).catch(withContext(regionAccess(region, offset, data.length)));
  }

  /**
   * Sets (or clears) Bus Master Enable in the PCI command register, as a
   * guest driver does before its device may DMA (read-modify-write of
   * config space, region 7, offset 4). The device's DMA fails while it is clear.
   */
  async setBusMaster(on = true): Promise<void> {
    const command = (await this.regionRead(CONFIG_REGION, PCI_COMMAND, 2)).readUInt16LE(0);
    const next = on ? command | PCI_COMMAND_MASTER : command & ~PCI_COMMAND_MASTER;
    const b = Buffer.alloc(2);
    b.writeUInt16LE(next);
    await this.regionWrite(CONFIG_REGION, PCI_COMMAND, b);
  }

  /** REGION_WRITE posted (no reply). */
  postRegionWrite(region: number, offset: number, data: Uint8Array): void {
    this.post(Command.REGION_WRITE, encodeRegionWriteRequest({ offset, region, count: data.length, data }));
  }

  /** REGION_WRITE_MULTI; waits for the reply unless `posted`. */
  async regionWriteMulti(writes: RegionWriteOne[], posted = false): Promise<void> {
    const payload = encodeRegionWriteMultiRequest({ writes });
    if (posted) this.post(Command.REGION_WRITE_MULTI, payload);
    else await this.request(Command.REGION_WRITE_MULTI, payload);
  }

  /**
   * DMA_MAP of `memory` at `address`. With an fd the device maps it
   * directly; without, this client serves its DMA_READ / DMA_WRITE.
   */
  async dmaMap(address: number, memory: GuestMemory, flags = DmaMapFlag.READ | DmaMapFlag.WRITE, offset = 0): Promise<void> {
    await this.dmaMapRaw(address, memory.bytes.length, flags, offset, memory.fd);
    this.lent.push({ address, memory });
  }

  /** DMA_MAP with explicit fields (for tests of bad input). The fd is borrowed. */
  async dmaMapRaw(address: number, size: number, flags: number, offset: number, fd?: number): Promise<void> {
    await this.request(Command.DMA_MAP, encodeDmaMapRequest({ argsz: 32, flags, offset, address, size }), fd === undefined ? undefined : [fd]);
  }

  /** DMA_UNMAP of [address, address+size), or everything with `all`. */
  async dmaUnmap(address: number, size: number, all = false): Promise<void> {
    await this.request(Command.DMA_UNMAP, encodeDmaUnmapRequest({ argsz: 24, flags: all ? DmaUnmapFlag.ALL : 0, address, size }));
    const i = this.lent.findIndex((l) => l.address === address && l.memory.bytes.length === size);
    if (all) this.lent.length = 0;
    else if (i >= 0) this.lent.splice(i, 1);
  }

  /** DEVICE_RESET. */
  async reset(): Promise<void> {
    await this.request(Command.DEVICE_RESET, Buffer.alloc(0));
  }

  /** DEVICE_FEATURE with GET, SET or PROBE in `flags`. */
  async deviceFeature(flags: number, data: FeatureData = { kind: 'none' }, argsz = 4096): Promise<DeviceFeature> {
    const r = await this.request(Command.DEVICE_FEATURE, encodeDeviceFeatureRequest({ argsz, flags, data }));
    return decodeDeviceFeatureReply(r.payload);
  }

  /** Probes whether the server supports a feature. */
  async probeFeature(feature: number, op: number = DeviceFeatureFlag.GET): Promise<boolean> {
    try {
      await this.deviceFeature(feature | op | DeviceFeatureFlag.PROBE, { kind: 'none' }, 8);
      return true;
    } catch (e) {
      if (e instanceof ClientError) return false;
      throw e;
    }
  }

  /** MIG_DATA_READ of up to `size` bytes. */
  async migDataRead(size: number): Promise<Buffer> {
    const r = await this.request(Command.MIG_DATA_READ, encodeMigDataReadRequest({ argsz: 8 + size, size }));
    const m = decodeMigDataReadReply(r.payload);
    return Buffer.from(m.data);
  }

  /** MIG_DATA_WRITE of `data`. */
  async migDataWrite(data: Uint8Array): Promise<void> {
    await this.request(Command.MIG_DATA_WRITE, encodeMigDataWriteRequest({ argsz: 8 + data.length, size: data.length, data }));
  }

  private allocId(): number {
    do this.nextId = (this.nextId + 1) & 0xffff;
    while (this.pending.has(this.nextId));
    this.timedOut.delete(this.nextId);
    return this.nextId;
  }

  private onFrame(frame: Frame): void {
    const header = decodeHeader(frame.bytes);
    const payload = frame.bytes.subarray(HEADER_SIZE, header.size);
    if ((header.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.REPLY) {
      const p = this.pending.get(header.msgId);
      if (!p) {
        closeAll(frame.fds);
        if (!this.timedOut.delete(header.msgId)) {
          this.unexpectedMessages.push({ header, reason: `a reply (${commandName(header.command)}, msg_id ${header.msgId}) to no request in flight` });
        }
        return;
      }
      this.pending.delete(header.msgId);
      clearTimeout(p.timer);
      if (header.command !== p.command) {
        // The server answered something else under this msg_id: the two ends are out of step.
        closeAll(frame.fds);
        const reason = `the reply to ${commandName(p.command)} (msg_id ${p.msgId}) names command ${commandName(header.command)}`;
        this.unexpectedMessages.push({ header, reason });
        p.reject(new Error(reason));
        return;
      }
      if (header.flags & HeaderFlag.ERROR) {
        closeAll(frame.fds);
        p.reject(new ClientError(p.command, header.errno));
      } else {
        p.resolve({ header, payload, fds: frame.fds });
      }
      return;
    }
    closeAll(frame.fds);
    if (header.command !== Command.DMA_READ && header.command !== Command.DMA_WRITE) {
      this.unexpectedMessages.push({ header, reason: `${commandName(header.command)} (msg_id ${header.msgId}) from the server, not flagged as a reply` });
    }
    this.serveDeviceRequest(header, payload);
  }

  /** Answers the device's DMA_READ / DMA_WRITE from lent memory. */
  private serveDeviceRequest(header: Header, payload: Buffer): void {
    try {
      if (header.command === Command.DMA_READ) {
        const m = decodeDmaReadRequest(payload);
        const data = this.lentRange(m.address, m.count);
        this.channel.send(encodeDmaReadReply({ address: m.address, count: m.count, data }, { msgId: header.msgId, command: header.command, flags: HeaderFlag.REPLY }));
      } else if (header.command === Command.DMA_WRITE) {
        const m = decodeDmaWriteRequest(payload);
        this.lentRange(m.address, m.count).set(m.data);
        this.channel.send(encodeReply(header.msgId, header.command, encodeDmaWriteReply({ address: m.address, count: m.count })));
      } else {
        throw Object.assign(new Error('unexpected command'), { errno: 22 });
      }
      this.dmaRequestsServed++;
    } catch (e) {
      const errno = (e as { errno?: number }).errno ?? 14;
      this.channel.send(encodeErrorReply(header.msgId, header.command, errno > 0 ? errno : 14));
    }
  }

  private lentRange(address: number, count: number): Uint8Array {
    for (const l of this.lent) {
      const start = address - l.address;
      if (start >= 0 && start + count <= l.memory.bytes.length) return l.memory.bytes.subarray(start, start + count);
    }
    throw Object.assign(new Error(`DMA to unmapped 0x${address.toString(16)}`), { errno: 14 });
  }

  private onClose(_e?: Error): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(`connection closed while waiting for the reply to ${commandName(p.command)} (msg_id ${p.msgId})`));
    }
    this.pending.clear();
    this.markClosed();
  }
}

/** `DEVICE_GET_INFO`, or the number of a command this client does not know. */
export function commandName(command: number): string {
  return Command[command] ?? `command ${command}`;
}
