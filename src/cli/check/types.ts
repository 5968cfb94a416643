/** The shapes `muser check` works with: a check, its context and its result. */
import type { Client } from '../../client/client.js';
import type { DeviceInfo } from '../../protocol/device-info.js';
import type { RegionInfoReply } from '../../protocol/region-info.js';

/** What came back on a connection of a check's own. */
export interface RawOutcome {
  /** Whole messages received, header included. */
  replies: Buffer[];
  /** The server closed the connection. */
  closed: boolean;
}

/** PASS, FAIL or SKIP (the server does not offer what the check needs). */
export type CheckStatus = 'pass' | 'fail' | 'skip';

/** One check's outcome. */
export interface CheckResult {
  /** Stable id, `group.name` (`config.bar-sizing`). */
  id: string;
  /** What it checks, in a few words. */
  title: string;
  status: CheckStatus;
  /** Why it failed or was skipped, or what it found. */
  detail?: string;
}

/** A check: throws CheckFailure (or anything) to fail, CheckSkip to skip; returns a detail to pass. */
export interface Check {
  id: string;
  title: string;
  run(ctx: CheckContext): Promise<string | void>;
}

/** What the server told us once, shared by the checks. */
export interface DeviceFacts {
  info: DeviceInfo;
  /** Region info by index, for indexes below info.numRegions. */
  regions: (RegionInfoReply & { fd: number | undefined })[];
}

/**
 * What a check works with. All checks share one negotiated connection, the
 * first the run makes, so that a server that serves one client in its life
 * (libvfio-user's samples) is checked on it; only the checks that need a
 * connection of their own come last and open one.
 */
export interface CheckContext {
  /** The socket under test. */
  readonly path: string;
  /** The shared negotiated connection (a new one if the last was closed). */
  client(): Promise<Client>;
  /** Closes the shared connection (the next client() reconnects). */
  disconnect(): void;
  /**
   * Closes the shared connection, sends `messages` on a connection of the
   * check's own (not negotiated) and collects up to `want` messages back
   * (see {@link RawOutcome}). Skips the check when the server stopped
   * listening once its one client left.
   */
  exchangeAlone(messages: Buffer[], want: number): Promise<RawOutcome>;
  /** Device info and region info, fetched once. */
  facts(): Promise<DeviceFacts>;
  /** Milliseconds to wait for a reply. */
  readonly timeoutMs: number;
}

/** The check found a violation. */
export class CheckFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckFailure';
  }
}

/** The check does not apply to this server. */
export class CheckSkip extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckSkip';
  }
}

/** Fails the check with `message` unless `cond`. */
export function expect(cond: unknown, message: string): asserts cond {
  if (!cond) throw new CheckFailure(message);
}
