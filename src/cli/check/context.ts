/** The connection a run of checks shares, reconnecting when a check ended it. */
import { Client, ClientError } from '../../client/client.js';
import { Errno } from '../../protocol/constants.js';
import { CheckFailure, type CheckContext, type DeviceFacts } from './types.js';
import { closeAll } from '../../transport/channel.js';

const ERRNO_NAMES = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

/** `EINVAL(22)`. */
export function errnoName(errno: number): string {
  return `${ERRNO_NAMES.get(errno) ?? 'errno'}(${errno})`;
}

/** The shared context of one `muser check` run. */
export class Session implements CheckContext {
  private current: Client | undefined;
  private cached: DeviceFacts | undefined;

  constructor(
    readonly path: string,
    readonly timeoutMs: number,
  ) {}

  async client(): Promise<Client> {
    if (this.current && !this.current.isClosed) return this.current;
    this.current = await Client.connect(this.path, { timeoutMs: this.timeoutMs });
    return this.current;
  }

  disconnect(): void {
    this.current?.close();
    this.current = undefined;
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

  close(): void {
    this.disconnect();
  }
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

/** Fails unless the server still answers DEVICE_GET_INFO on `client`. */
export async function expectAlive(client: Client, after: string): Promise<void> {
  try {
    await client.deviceInfo();
  } catch (e) {
    throw new CheckFailure(`after ${after}, the server no longer answers: ${(e as Error).message}`);
  }
}
