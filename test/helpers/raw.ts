/**
 * Test-side tools: a raw vfio-user connection that sends arbitrary bytes
 * and collects whatever comes back, fd counting for this process, and a
 * client connect that waits out the server noticing the previous client left.
 */
import { readdirSync } from 'node:fs';
import { Channel, closeAll } from '../../src/transport/channel.js';
import { connectNow } from '../../src/transport/connect.js';
import { Command, HEADER_SIZE, HeaderFlag } from '../../src/protocol/constants.js';
import { encodeMessage, type Header } from '../../src/protocol/header.js';
import { encodeVersion, type VersionCapabilities } from '../../src/protocol/version.js';
import { Client, type ClientOptions } from '../../src/client/index.js';

/** A received message, decoded leniently (the test judges it). */
export interface RawFrame {
  header: Header;
  payload: Buffer;
  fds: number[];
}

/** Entries in this process's /proc/self/fd. */
export function selfFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** A connection that speaks bytes, for hostile-input tests. */
export class RawConn {
  readonly channel: Channel;
  private readonly frames: RawFrame[] = [];
  private waiters: (() => void)[] = [];
  private closedFlag = false;
  readonly closed: Promise<void>;
  private nextId = 0;

  private constructor(
    /** The socket (the channel owns it): for a test that reads it by hand while the channel is paused. */
    readonly fd: number,
  ) {
    let done!: () => void;
    this.closed = new Promise((r) => (done = r));
    this.channel = new Channel(fd, {
      onFrame: (f) => {
        const b = f.bytes;
        this.frames.push({
          header: { msgId: b.readUInt16LE(0), command: b.readUInt16LE(2), size: b.readUInt32LE(4), flags: b.readUInt32LE(8), errno: b.readUInt32LE(12) },
          payload: Buffer.from(b.subarray(HEADER_SIZE)),
          fds: f.fds,
        });
        this.wake();
      },
      onClose: () => {
        this.closedFlag = true;
        done();
        this.wake();
      },
    });
  }

  static connect(path: string): RawConn {
    return new RawConn(connectNow(path));
  }

  /** Connects and negotiates VERSION. */
  static async negotiated(path: string, caps: VersionCapabilities = { maxMsgFds: 16 }): Promise<RawConn> {
    const c = RawConn.connect(path);
    const r = await c.call(Command.VERSION, encodeVersion({ major: 0, minor: 1, capabilities: caps }));
    if (r === 'closed' || r.header.flags & HeaderFlag.ERROR) {
      c.close();
      throw new Error(`VERSION failed: ${r === 'closed' ? 'closed' : `errno ${r.header.errno}`}`);
    }
    return c;
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  /** Sends bytes as they are. */
  send(bytes: Buffer, fds?: readonly number[]): void {
    this.channel.send(bytes, fds);
  }

  /** Sends a command; returns its msgId. */
  command(command: number, payload: Buffer = Buffer.alloc(0), opts: { msgId?: number; flags?: number; fds?: readonly number[] } = {}): number {
    const msgId = opts.msgId ?? this.allocId();
    this.channel.send(encodeMessage({ msgId, command, flags: opts.flags ?? 0 }, payload), opts.fds);
    return msgId;
  }

  /** Sends a command and waits for the frame answering it ('closed' if the server hung up). */
  async call(command: number, payload?: Buffer, opts: { msgId?: number; flags?: number; fds?: readonly number[]; timeoutMs?: number } = {}): Promise<RawFrame | 'closed'> {
    const msgId = this.command(command, payload, opts);
    for (;;) {
      const f = await this.next(opts.timeoutMs ?? 5000);
      if (f === 'closed') return f;
      if (f.header.msgId === msgId && (f.header.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.REPLY) return f;
      closeAll(f.fds);
    }
  }

  /** Sends a command, expects an error reply and returns its errno. */
  async errnoOf(command: number, payload?: Buffer, opts: { flags?: number; fds?: readonly number[] } = {}): Promise<number | 'ok' | 'closed'> {
    const f = await this.call(command, payload, opts);
    if (f === 'closed') return f;
    closeAll(f.fds);
    return f.header.flags & HeaderFlag.ERROR ? f.header.errno : 'ok';
  }

  /** The next received frame, or 'closed'. Throws after `timeoutMs`. */
  async next(timeoutMs = 5000): Promise<RawFrame | 'closed'> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.shift();
      if (f) return f;
      if (this.closedFlag) return 'closed';
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message in ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Frames received and not yet taken. */
  pendingFrames(): number {
    return this.frames.length;
  }

  /** True if the server closes the connection within `timeoutMs`. */
  async waitClosed(timeoutMs = 3000): Promise<boolean> {
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.closed.then(() => true), new Promise<boolean>((resolve) => (t = setTimeout(() => resolve(false), timeoutMs)))]);
    clearTimeout(t);
    return r;
  }

  close(): void {
    this.channel.close();
    for (const f of this.frames.splice(0)) closeAll(f.fds);
  }

  private allocId(): number {
    this.nextId = (this.nextId + 1) & 0x7fff;
    return this.nextId;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/**
 * Client.connect, retried while the server still serves the previous client
 * (it refuses a second client by closing the new connection at once).
 */
export async function connectClient(path: string, options?: ClientOptions, timeoutMs = 3000): Promise<Client> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await Client.connect(path, options);
    } catch (e) {
      if (Date.now() > deadline || !/connection closed/.test(String(e))) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
