/**
 * One NBD connection after its handshake: many requests in flight, each
 * named by a cookie, replies matched in whatever order they come. When the
 * connection ends, the requests still without a reply are handed back, so
 * the owner can send them again on a new connection.
 */
import { connect, type Socket } from 'node:net';
import { encodeRequest, NbdProtocolError, ReplyParser, type ReadTarget } from './codec.js';
import { ByteQueue } from './cursor.js';
import { NbdConnectError } from './errors.js';
import { handshakeInput, negotiate, type ExportInfo } from './handshake.js';
import { Cmd, REQUEST_HEADER_SIZE } from './protocol.js';
import { formatNbdAddress, type NbdAddress } from './uri.js';

/** One command. `buffers` is the payload of a write or the destination of a read. */
export interface NbdRequest {
  readonly type: number;
  readonly flags: number;
  readonly offset: number;
  readonly length: number;
  readonly buffers?: readonly Uint8Array[];
  /** Called once with the server's answer: 0 or an NBD errno value. */
  settle(error: number, message?: string): void;
}

/**
 * Connects and runs the handshake, giving up after `timeoutMs`.
 *
 * @throws NbdConnectError
 */
export async function openConnection(address: NbdAddress, timeoutMs: number, onLost: (unreplied: NbdRequest[], reason: Error) => void): Promise<NbdConnection> {
  const socket = address.transport === 'unix' ? connect({ path: address.socketPath }) : connect({ host: address.host, port: address.port });
  const queue = new ByteQueue();
  const input = handshakeInput(socket, queue);
  const timer = setTimeout(() => socket.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (e) => reject(new NbdConnectError('connect', `cannot connect to ${formatNbdAddress(address)}: ${e.message}`)));
    });
    if (address.transport === 'tcp') socket.setNoDelay(true);
    const info = await negotiate(socket, input, address.exportName);
    return new NbdConnection(socket, queue, info, onLost);
  } catch (e) {
    socket.destroy();
    throw e instanceof NbdConnectError ? e : new NbdConnectError('protocol', (e as Error).message);
  } finally {
    clearTimeout(timer);
    input.dispose();
  }
}

export class NbdConnection {
  private readonly pending = new Map<bigint, NbdRequest>();
  private readonly parser: ReplyParser;
  private nextCookie = 1n;
  private lost = false;
  private corked = false;

  constructor(
    private readonly socket: Socket,
    queue: ByteQueue,
    readonly info: ExportInfo,
    private readonly onLost: (unreplied: NbdRequest[], reason: Error) => void,
  ) {
    this.parser = new ReplyParser(queue, info.structuredReplies, {
      lookup: (cookie) => {
        const r = this.pending.get(cookie);
        if (r === undefined) return undefined;
        return r.type === Cmd.Read ? (r as ReadTarget & NbdRequest) : null;
      },
      finish: (cookie, error, message) => {
        const r = this.pending.get(cookie);
        this.pending.delete(cookie);
        r?.settle(error, message);
      },
    });
    socket.on('data', (b: Buffer) => {
      queue.push(b);
      try {
        this.parser.pump();
      } catch (e) {
        this.end(e instanceof NbdProtocolError ? e : new NbdProtocolError(String(e)));
      }
    });
    socket.on('error', (e) => this.end(e));
    socket.on('close', () => this.end(new Error('the server closed the connection')));
    // Bytes that arrived with the end of the handshake.
    if (queue.length > 0) queueMicrotask(() => this.parser.pump());
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Sends a request; its settle() runs when the reply comes. */
  submit(r: NbdRequest): void {
    if (this.lost) {
      this.onLost([r], new Error('the connection is gone'));
      return;
    }
    const cookie = this.nextCookie++;
    this.pending.set(cookie, r);
    const header = encodeRequest(r.type, r.flags, cookie, r.offset, r.length);
    // Requests made in one tick leave in one writev.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(header);
    if (r.type === Cmd.Write && r.buffers) for (const b of r.buffers) if (b.byteLength > 0) this.socket.write(b);
  }

  /** Asks the server to end the session (NBD_CMD_DISC) and closes the socket. */
  disconnect(): Promise<void> {
    if (this.lost) return Promise.resolve();
    this.lost = true;
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end(encodeRequest(Cmd.Disconnect, 0, 0n, 0, 0).subarray(0, REQUEST_HEADER_SIZE));
      // A server that does not hang up after NBD_CMD_DISC.
      setTimeout(() => this.socket.destroy(), 1000).unref();
    });
  }

  /** Drops the connection at once, as if the server had gone away. */
  destroy(reason: Error): void {
    this.end(reason);
  }

  private end(reason: Error): void {
    if (this.lost) return;
    this.lost = true;
    this.socket.destroy();
    const unreplied = [...this.pending.values()];
    this.pending.clear();
    this.onLost(unreplied, reason);
  }
}
