/**
 * One client connection to one device: negotiation, in-order dispatch of
 * commands, replies, and the server's own requests (DMA_READ / DMA_WRITE).
 *
 * Commands are handled strictly in order. A handler that returns a Promise
 * delays its reply and the commands behind it, never the event loop, and
 * never the replies the client sends to the server's own requests.
 *
 * What one client makes the server hold is bounded: while its unread
 * replies or waiting requests exceed the limits, its socket is not read
 * (backpressure), and a connection that does not negotiate VERSION in time
 * is closed.
 */
import { Channel, closeAll, retainReceived } from '../transport/channel.js';
import type { TaggedFrame, Transport, TransportFactory } from '../transport/transport.js';
import type { Frame } from '../transport/framer.js';
import { Command, HEADER_SIZE, HeaderFlag } from '../protocol/constants.js';
import { decodeHeader, encodeErrorReply, encodeMessage, encodeReply, type Header } from '../protocol/header.js';
import { decodeDmaReadReply, encodeDmaReadRequest, encodeDmaWriteRequest } from '../protocol/dma-access.js';
import type { DmaMessenger } from '../device/dma-access.js';
import { GatedDmaAccess } from '../device/gated-dma.js';
import { IoEventFds } from '../device/ioeventfds.js';
import { DmaTable } from '../device/dma.js';
import { DirtyLog } from '../migration/dirty-log.js';
import type { Device } from '../device/device.js';
import type { MigrationOffer } from '../migration/offer.js';
import { DeviceError, Errno, errnoOf } from '../device/errors.js';
import { dispatch } from './dispatch.js';
import { RefusalWarnings } from './refusals.js';
import { SpinWatch } from './spin-watch.js';
import { NOT_IN_PLACE, ReplyBuffer, serveRegionInPlace } from './region-in-place.js';
import { ProtocolError } from '../protocol/errors.js';
import type { Negotiated, Reply, Request, ServerLimits, SessionContext } from './context.js';
import type { Logger } from '../device/logger.js';

export { DEFAULT_LIMITS, type Negotiated, type Request, type ServerLimits } from './context.js';

/** Requests a client may have waiting in the server before it stops reading them. */
const MAX_QUEUED_REQUESTS = 1024;
/** ...and the hard stop, even while the device waits for the client's answer to a DMA request. */
const MAX_QUEUED_REQUESTS_HARD = 16 * MAX_QUEUED_REQUESTS;

interface Outstanding {
  resolve(frame: { header: Header; payload: Buffer }): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

const PRE_VERSION_MAX_MESSAGE = HEADER_SIZE + 64 * 1024;

/** A live connection between a client and a device. */
export class Session implements DmaMessenger, SessionContext {
  /** The connection: a Channel on the client's fd, or the transport the session was given. */
  readonly channel: Transport;
  readonly dmaTable: DmaTable;
  /** Device DMA; migration holds it while the device is stopped. */
  readonly dma: GatedDmaAccess;
  /** DMA dirty-page logging (DEVICE_FEATURE DMA_LOGGING_*). */
  readonly dirtyLog: DirtyLog;
  /** Doorbell eventfds handed to the client (GET_REGION_IO_FDS). */
  readonly ioEventFds: IoEventFds;
  negotiated: Negotiated | undefined;
  /** Unsolicited replies and other dropped messages, for tests and logs. */
  dropped = 0;
  private stopped = false;
  private queue: Request[] = [];
  /** Payload bytes of the requests in `queue`. */
  private queuedBytes = 0;
  private busy = false;
  private nextMsgId = 1;
  private outstanding = new Map<number, Outstanding>();
  private versionTimer: NodeJS.Timeout | undefined;
  private readonly refusals: RefusalWarnings;
  readonly spin: SpinWatch;
  /** Busy-poll window in ms after socket or doorbell activity (`--poll`); 0 sleeps in epoll. */
  readonly pollIdleMs: number;
  /**
   * The Channel this session made on the client's fd, and the buffer its
   * in-place replies are built in (region-in-place.ts). Undefined with a
   * transport given by the caller (it may keep what it is handed).
   */
  private readonly inPlace: { channel: Channel; replies: ReplyBuffer } | undefined;

  constructor(
    readonly device: Device,
    /** The device's live migration (shared by its sessions), or why it has none. */
    readonly migration: MigrationOffer,
    /** The client's connection fd (owned from now on), or a factory of the transport to serve it through. */
    connection: number | TransportFactory,
    readonly limits: ServerLimits,
    readonly log: Logger,
    private readonly onEnd: (session: Session) => void,
    /** Busy-poll window in ms after socket or doorbell activity; 0 sleeps in epoll. */
    pollIdleMs = 0,
  ) {
    this.dmaTable = new DmaTable({ pageSize: limits.pgsizes, maxMaps: limits.maxDmaMaps });
    this.dma = new GatedDmaAccess(this.dmaTable, this, () => device.busMasterAllowed);
    this.dirtyLog = new DirtyLog(this.dmaTable);
    this.refusals = new RefusalWarnings(log);
    this.spin = new SpinWatch(device, log);
    this.ioEventFds = new IoEventFds(device, log, pollIdleMs);
    this.pollIdleMs = pollIdleMs;
    const handlers = { onFrame: (f: Frame) => this.onFrame(f), onClose: (e?: Error) => this.onClose(e), onDrain: () => this.resume() };
    if (typeof connection === 'number') {
      const channel = new Channel(connection, handlers, PRE_VERSION_MAX_MESSAGE, true);
      this.channel = channel;
      this.inPlace = { channel, replies: new ReplyBuffer() };
    } else {
      this.channel = connection(handlers, PRE_VERSION_MAX_MESSAGE);
    }
    if (pollIdleMs > 0) this.channel.busyPoll(pollIdleMs);
    this.versionTimer = setTimeout(() => {
      this.versionTimer = undefined;
      this.close(new Error(`no VERSION negotiated within ${limits.versionTimeoutMs} ms`));
    }, limits.versionTimeoutMs);
  }

  /** True while migration keeps the device quiet (see the migration module). */
  get quiesced(): boolean {
    return this.stopped;
  }

  /** The device hears of each change: its timers pause and resume. */
  set quiesced(value: boolean) {
    if (value === this.stopped) return;
    this.stopped = value;
    this.device.quiesceChanged(value);
  }

  /** Largest DMA_READ/WRITE payload the client accepts. */
  get maxChunk(): number {
    return this.negotiated?.clientMaxDataXferSize ?? 1024 * 1024;
  }

  /** Largest message the client may send once negotiated. */
  get maxMessageSize(): number {
    return HEADER_SIZE + Math.max(this.limits.maxDataXferSize + 64, 64 * 1024);
  }

  /** Ends the connection (the device then drops per-connection state). */
  close(reason?: Error): void {
    this.channel.close(reason);
  }

  /** Sends DMA_READ and resolves with the data. */
  async read(iova: number, length: number): Promise<Buffer> {
    const reply = await this.request(Command.DMA_READ, encodeDmaReadRequest({ address: iova, count: length }));
    const m = decodeDmaReadReply(reply.payload);
    if (m.address !== iova || m.data.length !== length) throw new DeviceError(Errno.EIO, 'DMA_READ reply does not match the request');
    return Buffer.from(m.data);
  }

  /** Sends DMA_WRITE and resolves when the client confirms. */
  async write(iova: number, data: Uint8Array): Promise<void> {
    await this.request(Command.DMA_WRITE, encodeDmaWriteRequest({ address: iova, count: data.length, data }));
  }

  /** Sends a command to the client and waits for its reply. */
  request(command: number, payload: Buffer): Promise<{ header: Header; payload: Buffer }> {
    return new Promise((resolve, reject) => {
      if (this.channel.isClosed) return reject(new DeviceError(Errno.ENOTCONN, 'client disconnected'));
      const msgId = this.allocMsgId();
      const timer = setTimeout(() => {
        this.outstanding.delete(msgId);
        reject(new DeviceError(Errno.ETIMEDOUT, `client did not answer command ${command} in ${this.limits.requestTimeoutMs} ms`));
      }, this.limits.requestTimeoutMs);
      this.outstanding.set(msgId, { resolve, reject, timer });
      this.channel.send(encodeMessage({ msgId, command }, payload));
      // The client's answer may sit behind requests we stopped reading.
      this.updateReading();
    });
  }

  /** Called once VERSION succeeded and its reply went out. */
  onNegotiated(): void {
    clearTimeout(this.versionTimer);
    this.versionTimer = undefined;
    this.channel.setMaxMessageSize(this.maxMessageSize);
    this.device.link = this;
    this.device.doorbellThreads?.connect(this.device);
    this.device.startWatching(this.pollIdleMs, this.log);
    try {
      this.device.spec.onConnect?.(this.device);
    } catch (e) {
      this.log.error(`onConnect failed: ${String(e)}`);
    }
  }

  private allocMsgId(): number {
    do this.nextMsgId = (this.nextMsgId + 1) & 0xffff;
    while (this.outstanding.has(this.nextMsgId));
    return this.nextMsgId;
  }

  private onFrame(frame: Frame & TaggedFrame): void {
    const inPlace = this.inPlace;
    if (inPlace && frame.fds.length === 0 && this.negotiated && !this.busy && this.queue.length === 0 && !this.backlogged) {
      let served: number | Promise<Reply>;
      try {
        served = serveRegionInPlace(this, frame.bytes, inPlace.replies);
      } catch (e) {
        this.finish(requestOf(frame), e);
        return this.updateReading();
      }
      if (served !== NOT_IN_PLACE) {
        if (typeof served !== 'number') this.await(requestOf(frame), served);
        else if (served > 0) inPlace.channel.sendBorrowed(inPlace.replies.view(served));
        return this.updateReading();
      }
    }
    let header: Header;
    try {
      header = decodeHeader(frame.bytes);
    } catch {
      // Framing is intact (the framer checked the size): refuse just this message.
      closeAll(frame.fds);
      return this.replyError(rawHeader(frame.bytes), Errno.EINVAL, frame.tag);
    }
    // Frames are views of a shared receive buffer. Region accesses served
    // right away use it in place (drain retains it if they go async);
    // anything that may wait is copied.
    const hot = header.command === Command.REGION_READ || header.command === Command.REGION_WRITE;
    const now = !this.busy && this.queue.length === 0 && !this.backlogged;
    const bytes = hot && now ? frame.bytes : Buffer.from(frame.bytes);
    const payload = bytes.subarray(HEADER_SIZE, header.size);
    if ((header.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.REPLY) {
      this.onReply(header, payload, frame.fds);
      return this.respond(frame.tag, undefined);
    }
    this.queue.push({ header, payload, fds: frame.fds, tag: frame.tag });
    this.queuedBytes += payload.length;
    this.drain();
    this.updateReading();
  }

  /** True while the client leaves more of our replies unread than the bound allows. */
  private get backlogged(): boolean {
    return this.channel.pendingBytes > this.limits.maxPendingBytes;
  }

  /**
   * Backpressure: stops reading the client while its unread replies or its
   * waiting requests exceed the bounds, and reads again once they drain.
   */
  private updateReading(): void {
    if (this.channel.isClosed) return;
    const queueFull =
      this.queuedBytes > this.limits.maxPendingBytes ||
      this.queue.length >= MAX_QUEUED_REQUESTS_HARD ||
      (this.queue.length >= MAX_QUEUED_REQUESTS && this.outstanding.size === 0);
    this.channel.pauseReading(this.backlogged || queueFull);
  }

  /** The client took our replies: serve what waits, and read again. */
  private resume(): void {
    this.drain();
    this.updateReading();
  }

  private onReply(header: Header, payload: Buffer, fds: number[]): void {
    closeAll(fds);
    const o = this.outstanding.get(header.msgId);
    if (!o) {
      this.dropped++;
      this.log.warn(`dropped a reply nobody asked for (msg ${header.msgId}, command ${header.command})`);
      return;
    }
    this.outstanding.delete(header.msgId);
    clearTimeout(o.timer);
    if (header.flags & HeaderFlag.ERROR) o.reject(new DeviceError(header.errno || Errno.EIO, `client failed command ${header.command}: errno ${header.errno}`));
    else o.resolve({ header, payload });
  }

  /** Handles queued commands in order until one goes async. */
  private drain(): void {
    if (this.busy) return;
    while (this.queue.length > 0 && !this.channel.isClosed && !this.backlogged) {
      const req = this.queue.shift()!;
      this.queuedBytes -= req.payload.length;
      let result: Reply | Promise<Reply>;
      try {
        result = dispatch(this, req);
      } catch (e) {
        this.finish(req, e);
        continue;
      }
      if (result instanceof Promise) return this.await(req, result);
      this.finish(req, undefined, result);
    }
  }

  /** The handler of `req` answers later: commands behind it wait (busy) until it settles. */
  private await(req: Request, result: Promise<Reply>): void {
    this.busy = true;
    // A request served in place (see onFrame) that now waits keeps the receive buffer under it until it settles.
    const release = retainReceived(req.payload);
    result.then(
      (r) => this.finish(req, undefined, r),
      (e) => this.finish(req, e),
    ).finally(() => {
      release?.();
      this.busy = false;
      this.resume();
    });
  }

  private finish(req: Request, error: unknown, reply?: Reply): void {
    closeAll(req.fds);
    if (error !== undefined) {
      this.logFailure(req, error);
      this.replyError(req.header, errnoOf(error), req.tag);
      return;
    }
    if (req.header.flags & HeaderFlag.NO_REPLY) {
      this.respond(req.tag, undefined);
      if (reply && !Buffer.isBuffer(reply)) reply.after?.();
      return;
    }
    if (reply === undefined) {
      this.respond(req.tag, encodeReply(req.header.msgId, req.header.command));
    } else if (Buffer.isBuffer(reply)) {
      this.respond(req.tag, reply);
    } else {
      this.respond(req.tag, encodeReply(req.header.msgId, req.header.command, reply.payload), reply.fds);
      reply.after?.();
    }
  }

  private replyError(header: Header, errno: number, tag: number | undefined): void {
    this.respond(tag, header.flags & HeaderFlag.NO_REPLY ? undefined : encodeErrorReply(header.msgId, header.command, errno));
  }

  /** Sends the answer to a received frame (none when `reply` is undefined), through the transport's own path if it has one. */
  private respond(tag: number | undefined, reply: Buffer | undefined, fds?: readonly number[]): void {
    if (this.channel.answer) this.channel.answer(tag, reply, fds);
    else if (reply) this.channel.send(reply, fds);
  }

  private logFailure(req: Request, e: unknown): void {
    const header = req.header;
    const msg = e instanceof Error ? e.message : String(e);
    if (e instanceof DeviceError || (e && typeof e === 'object' && 'errno' in e)) {
      // A device refusing a guest's access (not a malformed message) is warned about: the guest only sees all-ones.
      if (RefusalWarnings.isRegionAccess(header.command) && !(e instanceof ProtocolError)) this.refusals.warn(header, req.payload, msg);
      else this.log.debug(`command ${header.command} refused: ${msg}`);
    } else this.log.error(`command ${header.command} failed in a device callback: ${msg}`);
  }

  private onClose(error?: Error): void {
    clearTimeout(this.versionTimer);
    this.versionTimer = undefined;
    if (error) this.log.warn(`connection closed: ${error.message}`);
    for (const req of this.queue) closeAll(req.fds);
    this.queue = [];
    this.queuedBytes = 0;
    for (const o of this.outstanding.values()) {
      clearTimeout(o.timer);
      o.reject(new DeviceError(Errno.ENOTCONN, 'client disconnected'));
    }
    this.outstanding.clear();
    this.dmaTable.clear();
    this.ioEventFds.close();
    this.device.stopWatching();
    this.onEnd(this);
  }
}

/**
 * The request of a frame the in-place path took (a command with a valid
 * header, no fds), for the general path's answer: its payload stays a view
 * of the frame.
 */
function requestOf(frame: Frame & TaggedFrame): Request {
  const header = decodeHeader(frame.bytes);
  return { header, payload: frame.bytes.subarray(HEADER_SIZE, header.size), fds: frame.fds, tag: frame.tag };
}

/** Header fields read without validation, to address an error reply. */
function rawHeader(bytes: Buffer): Header {
  return { msgId: bytes.readUInt16LE(0), command: bytes.readUInt16LE(2), size: bytes.readUInt32LE(4), flags: bytes.readUInt32LE(8), errno: 0 };
}
