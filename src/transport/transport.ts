/**
 * What a Session needs of its connection: framed messages in, whole
 * messages out. {@link Channel} is the ordinary one; an isolated device's
 * child process (src/isolate) serves through one that also journals the
 * stream, so a successor process can take the connection over.
 */
import type { Frame } from './framer.js';

/** Callbacks of a connection (a Channel, or a Session's own transport). */
export interface ChannelHandlers {
  /** A complete message; the handler owns `frame.fds`. */
  onFrame(frame: Frame): void;
  /** The connection ended: peer closed (error undefined) or failed. Called once. */
  onClose(error?: Error): void;
  /** Everything queued for sending went out (after sends had to wait). */
  onDrain?(): void;
}

/** A framed, fd-passing connection to one client. */
export interface Transport {
  readonly isClosed: boolean;
  /** Bytes accepted by send() that the peer has not taken yet. */
  readonly pendingBytes: number;
  /** Sends one whole message; the fds are borrowed. False when closed. */
  send(data: Buffer, fds?: readonly number[]): boolean;
  /** Closes the connection; onClose is called once with `error`. */
  close(error?: Error): void;
  /** Backpressure: stop (or resume) reading from the peer. */
  pauseReading(paused: boolean): void;
  /** Busy-polls the connection for `idleMs` after activity (0: off). */
  busyPoll(idleMs: number): void;
  /** Largest message accepted from the peer (header included). */
  setMaxMessageSize(size: number): void;
  /**
   * Optional: the frame `tag` (see {@link TaggedFrame}) is done with:
   * `reply` (when not undefined) is its answer, to send now. A transport
   * without this gets the reply through send().
   */
  answer?(tag: number | undefined, reply: Buffer | undefined, fds?: readonly number[]): void;
}

/** A frame as a journaling transport hands it over: `tag` names it in {@link Transport.answer}. */
export interface TaggedFrame {
  readonly tag?: number;
}

/** Builds a session's transport around the session's handlers. */
export type TransportFactory = (handlers: ChannelHandlers, maxMessageSize: number) => Transport;
