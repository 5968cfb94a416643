/**
 * The control link between the parent and one child: small JSON messages,
 * with fds by SCM_RIGHTS, over a socketpair. Messages are framed like
 * vfio-user's (a 16-byte header whose size field covers the message) so
 * the ordinary Channel carries them.
 */
import { Channel } from '../transport/channel.js';
import { HEADER_SIZE } from '../protocol/constants.js';
import type { DeviceArg } from './device-arg.js';
import type { ServerLimits } from '../server/context.js';

/** Parent to child. */
export type ParentMessage =
  /** Load the device; the journal memfd comes along. */
  | { type: 'init'; device: DeviceArg; verbose: boolean; limits?: Partial<ServerLimits> }
  /** A new client connection (its fd comes along): serve it from the start. */
  | { type: 'serve' }
  /** Part of a connection's record (the request's fds come along). */
  | { type: 'record'; request: string }
  /** Fds of a frame that was received but not answered when the last child stopped. */
  | { type: 'held'; tag: number }
  /** The doorbell eventfds of `region` the client holds (they come along): a successor serves those, not new ones. */
  | { type: 'doorbells'; region: number }
  /** The memfd of `region` the client got to map (it comes along): a successor serves that memory, not its own. */
  | { type: 'region-memory'; region: number }
  /** Take over the live connection (its fd comes along) from the records and the journal. */
  | { type: 'adopt'; reason: 'crash' | 'reload' }
  | { type: 'ping'; n: number }
  /** Stop reading the client, finish what is in flight, checkpoint, answer `quiesced`. */
  | { type: 'quiesce' }
  /** Reading again: the hand-over failed. */
  | { type: 'resume' }
  /** Leave now without touching the connection (a successor took it). */
  | { type: 'exit' };

/** Child to parent. */
export type ChildMessage =
  | { type: 'ready'; name: string; checkpointed: boolean; why?: string }
  | { type: 'load-failed'; message: string }
  | { type: 'pong'; n: number }
  /** The fds of frame `tag`, kept by the parent until `release` or `commit`. */
  | { type: 'held'; tag: number }
  /** A request that configures the connection succeeded: record it (with the fds held for `tag`). */
  | { type: 'commit'; tag: number; request: string }
  /** Frame `tag` is done and not recorded: close its held fds. */
  | { type: 'release'; tag: number }
  /** The client got the doorbell eventfds of `region` (they come along): keep them for a successor. */
  | { type: 'doorbells'; region: number }
  /** The client got the memfd of `region` to map (it comes along): keep it for a successor. */
  | { type: 'region-memory'; region: number }
  /** The device was reset: the client sets its interrupts again, so drop their records. */
  | { type: 'irq-reset' }
  /** The client left and the device is released. */
  | { type: 'ended' }
  | { type: 'adopted' }
  | { type: 'adopt-failed'; message: string }
  /** Quiesced and checkpointed; or, with `error`, the device could not quiesce (it serves on). */
  | { type: 'quiesced'; error?: string };

/** One end of the control socketpair. */
export class ControlLink<In, Out> {
  private readonly channel: Channel;

  constructor(fd: number, onMessage: (m: In, fds: number[]) => void, onClose: (error?: Error) => void) {
    this.channel = new Channel(fd, {
      onFrame: (f) => {
        const size = f.bytes.readUInt32LE(HEADER_SIZE);
        onMessage(JSON.parse(f.bytes.toString('utf8', HEADER_SIZE + 4, HEADER_SIZE + 4 + size)) as In, f.fds);
      },
      onClose,
    });
  }

  get isClosed(): boolean {
    return this.channel.isClosed;
  }

  /** Bytes queued in this process (not yet in the kernel). */
  get pendingBytes(): number {
    return this.channel.pendingBytes;
  }

  /** Sends a message; the fds are borrowed. */
  send(message: Out, fds?: readonly number[]): boolean {
    const json = Buffer.from(JSON.stringify(message), 'utf8');
    const b = Buffer.alloc(HEADER_SIZE + 4 + json.length);
    b.writeUInt32LE(b.length, 4);
    b.writeUInt32LE(json.length, HEADER_SIZE);
    json.copy(b, HEADER_SIZE + 4);
    return this.channel.send(b, fds);
  }

  close(): void {
    this.channel.close();
  }
}
