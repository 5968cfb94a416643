/**
 * The connection a run of checks shares, and what the run learns about the
 * server's connections: a server that serves one client in its life
 * (libvfio-user's server sample) stops listening when that client leaves,
 * which must not read as a crash.
 */
import { Client, ClientError, ReplyTimeout, commandName } from '../../client/client.js';
import { native } from '../../native/index.js';
import { ConnectError, connectNow, connectSocket } from '../../transport/connect.js';
import { closeAll } from '../../transport/channel.js';
import { Errno } from '../../protocol/constants.js';
import { exchange } from './raw.js';
import { CheckFailure, CheckSkip, type CheckContext, type DeviceFacts, type RawOutcome } from './types.js';

const ERRNO_NAMES = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

/** `EINVAL(22)`. */
export function errnoName(errno: number): string {
  return `${ERRNO_NAMES.get(errno) ?? 'errno'}(${errno})`;
}

/** A connection the run made: which check opened it and, once known, who ended it. */
interface ConnectionRecord {
  /** The check that opened it; '' for the run's first, shared connection. */
  check: string;
  /** `us`: closed in step; `server`: the server closed it; `out-of-step`: closed because it was. */
  end?: 'us' | 'server' | 'out-of-step';
  /** The check running when it ended. */
  endedDuring?: string;
}

/** The shared context of one `muser check` run. */
export class Session implements CheckContext {
  /** The check running now (the runner sets it), to say whose connection ended. */
  check = '';
  private current: Client | undefined;
  private cached: DeviceFacts | undefined;
  /** Every connection made, the first (the shared one the run opens) first. */
  private readonly made: ConnectionRecord[] = [];
  /** The server answered on a connection after the first: it serves more than one client in its life. */
  private servedAnother = false;
  /** Why no connection can be had; every later attempt gets the same answer at once. */
  private unreachable: CheckFailure | CheckSkip | undefined;

  constructor(
    readonly path: string,
    readonly timeoutMs: number,
  ) {}

  /**
   * Makes the run's first connection, the one every check shares. Rejects
   * with a ConnectError when the socket cannot be reached at all; a failed
   * VERSION is left for the checks to report.
   */
  async open(): Promise<void> {
    try {
      await this.client();
    } catch (e) {
      if (e instanceof ConnectError) throw e;
    }
  }

  async client(): Promise<Client> {
    if (this.current && !this.current.isClosed) return this.current;
    if (this.unreachable) throw this.unreachable;
    let client: Client;
    try {
      client = await Client.connect(this.path, { timeoutMs: this.timeoutMs });
    } catch (e) {
      if (this.made.length === 0 && e instanceof ConnectError) throw e;
      // Closed before VERSION was answered: the server may be on its way out.
      if (!(e instanceof ConnectError) && !(e instanceof ClientError) && !(e instanceof ReplyTimeout)) await this.expectListening();
      throw this.remember(e);
    }
    const record = this.record();
    if (this.made.length > 1) this.servedAnother = true;
    void client.whenClosed.then(() => {
      if (record.end) return;
      record.end = 'server';
      record.endedDuring = this.check;
    });
    this.current = client;
    return client;
  }

  disconnect(why: 'us' | 'out-of-step' = 'us'): void {
    if (this.current && !this.current.isClosed) this.made[this.made.length - 1].end ??= why;
    this.current?.close();
    this.current = undefined;
  }

  async exchangeAlone(messages: Buffer[], want: number): Promise<RawOutcome> {
    this.disconnect();
    if (this.unreachable) throw this.unreachable;
    let fd: number;
    try {
      fd = await connectSocket(this.path, { timeoutMs: this.timeoutMs });
    } catch (e) {
      throw this.remember(e);
    }
    const record = this.record();
    const outcome = await exchange(fd, messages, want, this.timeoutMs);
    if (outcome.replies.length > 0) this.servedAnother = true;
    if (outcome.closed) Object.assign(record, { end: 'server', endedDuring: this.check });
    // Closed without a word: a refusal, or a server that was leaving (queued, then dropped)?
    if (outcome.closed && outcome.replies.length === 0) await this.expectListening();
    return outcome;
  }

  async facts(): Promise<DeviceFacts> {
    if (this.cached) return this.cached;
    const c = await this.client();
    const info = await c.deviceInfo();
    const regions: DeviceFacts['regions'] = [];
    for (let i = 0; i < Math.min(info.numRegions, 64); i++) regions.push(await c.regionInfo(i));
    for (const r of regions) if (r.fd !== undefined) closeAll([r.fd]);
    this.cached = { info, regions };
    return this.cached;
  }

  /** What arrived out of step on the shared connection since the last call. */
  drainUnexpected(): string[] {
    return this.current?.unexpectedMessages.splice(0).map((u) => u.reason) ?? [];
  }

  /** After a failed check: keeps the shared connection if it still answers in step, else ends it. */
  async resync(): Promise<void> {
    if (!this.current || this.current.isClosed) return;
    try {
      await expectInSync(this.current, 'a failed check');
    } catch {
      this.disconnect('out-of-step');
    }
  }

  close(): void {
    this.disconnect();
  }

  private record(): ConnectionRecord {
    const record: ConnectionRecord = { check: this.check };
    this.made.push(record);
    return record;
  }

  /**
   * Throws (and remembers) why not when the server no longer listens. One
   * connect attempt, closed at once: only after a connection the server
   * dropped without a word, where the alternative is to guess.
   */
  private async expectListening(): Promise<void> {
    let fd: number;
    try {
      fd = connectNow(this.path);
    } catch (e) {
      if (e instanceof ConnectError && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')) throw this.remember(e);
      return; // there, if busy
    }
    native.close(fd);
  }

  /** Turns a failed connect or VERSION into the answer every later attempt gets. */
  private remember(e: unknown): CheckFailure | CheckSkip {
    this.unreachable ??= e instanceof ConnectError ? this.notListening(e) : new CheckFailure(`a new connection fails: ${describe(e)}`);
    return this.unreachable;
  }

  private notListening(e: ConnectError): CheckFailure | CheckSkip {
    if (e.code !== 'ENOENT' && e.code !== 'ECONNREFUSED') return new CheckFailure(e.message);
    // The first client left in step and no other was ever served: that is how the server is made.
    if (!this.servedAnother && this.made[0]?.end === 'us') {
      return new CheckSkip(`needs a new connection, but the server stopped listening (${e.code}) when its first client left: it serves one client in its life, as libvfio-user's server sample does`);
    }
    const last = this.made[this.made.length - 1];
    const which = last?.check ? `the connection of ${last.check}` : 'the shared connection';
    const how = last?.end === 'server' ? `, which it ended${last.endedDuring ? ` during ${last.endedDuring}` : ''}` : last?.end === 'out-of-step' ? ', ended for being out of step' : '';
    return new CheckFailure(`${e.message}: the server stopped listening after ${which}${how}`);
  }
}

function describe(e: unknown): string {
  if (e instanceof ClientError) return `${commandName(e.command)} refused: ${errnoName(e.errno)}`;
  return (e as Error).message;
}

/**
 * Expects `request` to be refused with one of `errnos`; fails on success,
 * on another errno, and on no reply at all.
 */
export async function expectRefused(request: Promise<unknown>, errnos: readonly number[], what: string): Promise<string> {
  try {
    await request;
  } catch (e) {
    if (e instanceof ClientError) {
      if (errnos.includes(e.errno)) return `${what}: ${errnoName(e.errno)}`;
      throw new CheckFailure(`${what}: refused with ${errnoName(e.errno)}, want ${errnos.map(errnoName).join(' or ')}`);
    }
    throw new CheckFailure(`${what}: ${(e as Error).message}`);
  }
  throw new CheckFailure(`${what}: accepted, want an error reply (${errnos.map(errnoName).join(' or ')})`);
}

/**
 * Fails unless the connection is still in step after `after`: DEVICE_GET_INFO
 * gets its reply (right msg_id, right command) and nothing else arrived that
 * answers no request (a second reply to a refused one, say).
 */
export async function expectInSync(client: Client, after: string): Promise<void> {
  try {
    await client.deviceInfo();
  } catch (e) {
    throw new CheckFailure(`after ${after}, the server no longer answers in step: ${(e as Error).message}`);
  }
  const odd = client.unexpectedMessages.splice(0);
  if (odd.length > 0) throw new CheckFailure(`after ${after}, the connection is out of step: ${odd.map((u) => u.reason).join('; ')}`);
}
