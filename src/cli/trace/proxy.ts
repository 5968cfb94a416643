/**
 * The transparent proxy behind `muser trace`: it listens where the client
 * (QEMU) connects, opens a connection to the device for each client, and
 * forwards every message both ways unchanged, with its fds (SCM_RIGHTS,
 * through the native transport), one message per sendmsg as it came.
 * Each message is also decoded and handed to `onEvent`, replies with the
 * time since their request passed through.
 */
import { Channel, closeAll } from '../../transport/channel.js';
import { Listener } from '../../transport/listener.js';
import { connectSocket } from '../../transport/connect.js';
import type { Frame } from '../../transport/framer.js';
import { HEADER_SIZE, HeaderFlag } from '../../protocol/constants.js';
import { decodeMessage, type Direction, type TraceEvent } from './decode.js';

/** Options for {@link TraceProxy}. */
export interface TraceProxyOptions {
  /** Data bytes kept per message, as hex (default 32). */
  dataBytes?: number;
  /** File mode of the listening socket (default owner-only). */
  mode?: number;
  /** A connection event: a client came or went, or the device could not be reached. */
  onConnection?(conn: number, what: 'open' | 'close' | 'error', detail?: string): void;
}

interface Link {
  conn: number;
  client: Channel;
  device: Channel;
  /** Arrival time (ns) of requests not yet answered, by `<dir>:<msgId>`. */
  pending: Map<string, bigint>;
}

/** Proxies one listening socket to a device socket, tracing every message. */
export class TraceProxy {
  private readonly listener: Listener;
  private readonly links = new Set<Link>();
  private readonly start = process.hrtime.bigint();
  private nextConn = 1;
  private closed = false;

  constructor(
    readonly devicePath: string,
    readonly listenPath: string,
    private readonly onEvent: (e: TraceEvent) => void,
    private readonly options: TraceProxyOptions = {},
  ) {
    this.listener = new Listener(listenPath, (fd) => void this.accept(fd), { mode: options.mode });
  }

  /** Stops listening, ends every proxied connection and removes the socket. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listener.close();
    for (const link of [...this.links]) {
      link.client.close();
      link.device.close();
    }
  }

  private async accept(clientFd: number): Promise<void> {
    const conn = this.nextConn++;
    let deviceFd: number;
    try {
      // The client's first messages wait in its socket while the device's backlog is full.
      deviceFd = await connectSocket(this.devicePath);
    } catch (e) {
      closeAll([clientFd]);
      this.options.onConnection?.(conn, 'error', `cannot reach the device at ${this.devicePath}: ${(e as Error).message}`);
      return;
    }
    if (this.closed) return closeAll([clientFd, deviceFd]);
    const link = { conn, pending: new Map<string, bigint>() } as Link;
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      this.links.delete(link);
      link.client.close();
      link.device.close();
      this.options.onConnection?.(conn, 'close');
    };
    link.client = new Channel(clientFd, { onFrame: (f) => this.forward(link, 'c>s', f), onClose: end });
    link.device = new Channel(deviceFd, { onFrame: (f) => this.forward(link, 's>c', f), onClose: end });
    this.links.add(link);
    this.options.onConnection?.(conn, 'open');
  }

  private forward(link: Link, dir: Direction, frame: Frame): void {
    const now = process.hrtime.bigint();
    const to = dir === 'c>s' ? link.device : link.client;
    // send() borrows the fds (dup'ing them if it must queue): ours to close after.
    to.send(frame.bytes, frame.fds.length > 0 ? frame.fds : undefined);
    closeAll(frame.fds);
    const event = decodeMessage(frame.bytes, frame.fds.length, dir, Number(now - this.start) / 1e9, this.options.dataBytes ?? 32);
    event.conn = link.conn;
    if (frame.bytes.length >= HEADER_SIZE) {
      const flags = frame.bytes.readUInt32LE(8);
      const isReply = (flags & HeaderFlag.TYPE_MASK) === HeaderFlag.REPLY;
      if (!isReply && !(flags & HeaderFlag.NO_REPLY)) link.pending.set(`${dir}:${event.msgId}`, now);
      if (isReply) {
        // A reply travels the other way from its request.
        const key = `${dir === 'c>s' ? 's>c' : 'c>s'}:${event.msgId}`;
        const sent = link.pending.get(key);
        if (sent !== undefined) {
          link.pending.delete(key);
          event.latencyUs = Math.round(Number(now - sent) / 1000);
        }
      }
    }
    this.onEvent(event);
  }
}
