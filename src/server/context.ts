/**
 * What command handlers (dispatch, negotiate, feature) see of a client's
 * session, and the shapes they share with it. Session implements
 * {@link SessionContext}; handlers depend on this file, not on the session,
 * so no import goes in a circle.
 */
import type { Header } from '../protocol/header.js';
import type { Device } from '../device/device.js';
import type { DmaTable } from '../device/dma.js';
import type { IoEventFds } from '../device/ioeventfds.js';
import type { DirtyLog } from '../migration/dirty-log.js';
import type { MigrationLink } from '../migration/migration.js';
import type { MigrationOffer } from '../migration/offer.js';
import type { SpinWatch } from './spin-watch.js';

/** Limits the server offers in VERSION negotiation. */
export interface ServerLimits {
  maxMsgFds: number;
  maxDataXferSize: number;
  maxDmaMaps: number;
  pgsizes: number;
  /** Milliseconds to wait for the client's reply to DMA_READ/WRITE. */
  requestTimeoutMs: number;
  /**
   * Milliseconds a new connection has to complete VERSION negotiation
   * before it is closed, so a silent client cannot hold the device.
   */
  versionTimeoutMs: number;
  /**
   * Backpressure bound, in bytes, on what one client makes the server hold:
   * replies it has not read yet, and requests waiting their turn. Past it,
   * the server stops reading that client's socket until the backlog drains.
   */
  maxPendingBytes: number;
}

export const DEFAULT_LIMITS: ServerLimits = {
  maxMsgFds: 16,
  maxDataXferSize: 1024 * 1024,
  maxDmaMaps: 65535,
  pgsizes: 4096,
  requestTimeoutMs: 5000,
  maxPendingBytes: 4 * 1024 * 1024,
  versionTimeoutMs: 10_000,
};

/** What the client offered in VERSION, merged with our limits. */
export interface Negotiated {
  maxMsgFds: number;
  /** Largest data payload we may send the client. */
  clientMaxDataXferSize: number;
  pageSize: number;
  writeMultiple: boolean;
}

/** A received command with its fds; handlers take fds by nulling them. */
export interface Request {
  readonly header: Header;
  readonly payload: Buffer;
  /** Fds that came with the command. A handler that keeps one sets its slot to -1. */
  readonly fds: number[];
  /** The transport's name for the frame it came in (see Transport.answer). */
  readonly tag?: number;
}

/** A handler's answer: a payload (with fds, and work to run once it is sent), or nothing for no reply. */
export type Reply = Buffer | { payload: Buffer; fds?: number[]; after?: () => void } | undefined;

/** The session as handlers use it (and as migration drives its client link). */
export interface SessionContext extends MigrationLink {
  readonly device: Device;
  /** The device's live migration (shared by its sessions), or why it has none. */
  readonly migration: MigrationOffer;
  readonly limits: ServerLimits;
  readonly dmaTable: DmaTable;
  readonly dirtyLog: DirtyLog;
  readonly ioEventFds: IoEventFds;
  /** Set by VERSION. */
  negotiated: Negotiated | undefined;
  /** Watches region reads for a driver spinning on a register that never changes. */
  readonly spin: SpinWatch;
  /** Largest DMA_READ/DMA_WRITE payload the client accepts. */
  readonly maxChunk: number;
  /** VERSION's reply went out: start serving. */
  onNegotiated(): void;
}
