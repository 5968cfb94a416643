/**
 * muser's end of the socket to a device program: requests with ids and a
 * time limit each, events, and the program's own requests and events
 * handed to the owner. Any breach of the protocol (a bad frame, an unknown
 * kind, a reply nobody asked for, an fd the program should not send) or a
 * missed time limit breaks the connection for good: every request waiting
 * fails, and so does every later one, at once.
 */
import { HEADER_SIZE, HeaderFlag } from '../protocol/constants.js';
import { Channel, closeAll } from '../transport/channel.js';
import type { Frame } from '../transport/framer.js';
import { DeviceError, Errno } from '../device/errors.js';
import { errorReply, event, Kind, MAX_MESSAGE, PROGRAM_EVENTS, PROGRAM_REQUESTS, ProgramProtocolError, reply, request } from './wire.js';

/** What the connection hands to its owner. */
export interface ConnectionHandlers {
  /** A request from the program; answer it with {@link ProgramConnection.reply} or {@link ProgramConnection.replyError}. */
  onRequest(kind: number, id: number, payload: Buffer): void;
  /** An event from the program. Throw {@link ProgramProtocolError} when its payload is malformed. */
  onEvent(kind: number, payload: Buffer): void;
  /** The connection broke (called once): why, in words that follow "device program". */
  onBroken(reason: string): void;
}

interface Waiter {
  resolve(payload: Buffer): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout | undefined;
  kind: number;
}

/** Requests the program may have in flight at once; more is a runaway program. */
const MAX_PROGRAM_REQUESTS = 64;

export class ProgramConnection {
  private readonly channel: Channel;
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 0;
  private brokenReason: string | undefined;
  /** Requests of the program not answered yet. */
  private programRequests = 0;

  /**
   * @param fd muser's end of the socket pair (owned from now on)
   * @param timeoutMs time limit of each request muser sends
   */
  constructor(
    fd: number,
    private readonly handlers: ConnectionHandlers,
    readonly timeoutMs: number,
  ) {
    this.channel = new Channel(fd, {
      onFrame: (frame) => this.onFrame(frame),
      onClose: (error) => this.break(error ? `broke the protocol: ${error.message}` : 'closed its socket'),
    }, MAX_MESSAGE);
  }

  /** Why the connection broke, or undefined while it works. */
  get broken(): string | undefined {
    return this.brokenReason;
  }

  /**
   * Sends a request; resolves with the reply's payload. Rejects with a
   * DeviceError: the errno of an error reply, ETIMEDOUT when the program
   * missed the time limit (which breaks the connection), EIO when the
   * connection is or becomes broken. `what` names the request in messages.
   */
  private request(kind: Kind, payload: Uint8Array | undefined, what: string, fds?: readonly number[], timeoutMs = this.timeoutMs): Promise<Buffer> {
    if (this.brokenReason !== undefined) return Promise.reject(this.brokenError());
    do this.nextId = (this.nextId + 1) & 0xffff;
    while (this.waiting.has(this.nextId));
    const id = this.nextId;
    return new Promise((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: undefined, kind };
      w.timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new DeviceError(Errno.ETIMEDOUT, `device program did not answer ${what} within ${timeoutMs} ms`));
        this.break(`did not answer ${what} within ${timeoutMs} ms`);
      }, timeoutMs);
      this.waiting.set(id, w);
      if (!this.channel.send(request(id, kind, payload), fds)) this.break('closed its socket');
    });
  }

  /**
   * {@link request}, and `decode` checks the reply's payload: a payload it
   * refuses (ProgramProtocolError) breaks the connection, and the request
   * fails with EIO.
   */
  async call<T>(kind: Kind, payload: Uint8Array | undefined, what: string, decode: (reply: Buffer) => T): Promise<T> {
    const reply = await this.request(kind, payload, what);
    try {
      return decode(reply);
    } catch (e) {
      if (!(e instanceof ProgramProtocolError)) throw e;
      this.break(`sent a malformed message: ${e.message}`);
      throw this.brokenError();
    }
  }

  /** Sends an event (dropped once broken). */
  send(kind: Kind, payload?: Uint8Array, fds?: readonly number[]): void {
    if (this.brokenReason === undefined) this.channel.send(event(kind, payload), fds);
  }

  /** Answers a request of the program. */
  reply(id: number, kind: number, payload?: Uint8Array): void {
    this.programRequests--;
    if (this.brokenReason === undefined) this.channel.send(reply(id, kind, payload));
  }

  /** Answers a request of the program with an error. */
  replyError(id: number, kind: number, errno: number, message: string): void {
    this.programRequests--;
    if (this.brokenReason === undefined) this.channel.send(errorReply(id, kind, errno, message));
  }

  /** Breaks the connection (idempotent): every waiting request fails with EIO. */
  break(reason: string): void {
    if (this.brokenReason !== undefined) return;
    this.brokenReason = reason;
    const waiters = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiters) {
      clearTimeout(w.timer);
      w.reject(this.brokenError());
    }
    this.channel.close();
    this.handlers.onBroken(reason);
  }

  private brokenError(): DeviceError {
    return new DeviceError(Errno.EIO, `device program is not running: it ${this.brokenReason}`);
  }

  private onFrame(frame: Frame): void {
    try {
      if (frame.fds.length > 0) throw new ProgramProtocolError(`sent ${frame.fds.length} file descriptor(s); programs send none`);
      this.dispatch(frame.bytes);
    } catch (e) {
      this.break(e instanceof ProgramProtocolError ? `sent a malformed message: ${e.message}` : `could not be served: ${String(e)}`);
    } finally {
      closeAll(frame.fds);
    }
  }

  private dispatch(bytes: Buffer): void {
    const id = bytes.readUInt16LE(0);
    const kind = bytes.readUInt16LE(2);
    const flags = bytes.readUInt32LE(8);
    const errno = bytes.readUInt32LE(12);
    const payload = bytes.subarray(HEADER_SIZE);
    const type = flags & HeaderFlag.TYPE_MASK;
    if (type === HeaderFlag.REPLY) {
      if ((flags & ~(HeaderFlag.TYPE_MASK | HeaderFlag.ERROR)) !== 0) throw new ProgramProtocolError(`reply flags 0x${flags.toString(16)}`);
      const w = this.waiting.get(id);
      if (!w || w.kind !== kind) throw new ProgramProtocolError(`a reply (id ${id}, kind ${kind}) to no request`);
      this.waiting.delete(id);
      clearTimeout(w.timer);
      if ((flags & HeaderFlag.ERROR) !== 0) {
        const message = payload.toString('utf8') || `error ${errno}`;
        w.reject(new DeviceError(errno > 0 && errno < 4096 ? errno : Errno.EIO, `device program: ${message}`));
      } else {
        w.resolve(Buffer.from(payload));
      }
      return;
    }
    if (type !== HeaderFlag.COMMAND || (flags & ~HeaderFlag.NO_REPLY) !== 0 || errno !== 0) {
      throw new ProgramProtocolError(`message flags 0x${flags.toString(16)}, errno ${errno}`);
    }
    if ((flags & HeaderFlag.NO_REPLY) !== 0) {
      if (!PROGRAM_EVENTS.has(kind)) throw new ProgramProtocolError(`unknown event kind ${kind}`);
      this.handlers.onEvent(kind, payload);
      return;
    }
    if (!PROGRAM_REQUESTS.has(kind)) throw new ProgramProtocolError(`unknown request kind ${kind}`);
    if (++this.programRequests > MAX_PROGRAM_REQUESTS) throw new ProgramProtocolError(`more than ${MAX_PROGRAM_REQUESTS} requests in flight`);
    // The owner may answer later: the payload is ours to keep.
    this.handlers.onRequest(kind, id, Buffer.from(payload));
  }
}
