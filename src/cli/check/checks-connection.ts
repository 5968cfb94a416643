/**
 * Checks that need a connection of their own: messages that must come
 * before (or instead of) VERSION, and headers a server must not trust.
 * They run last, after the shared connection is closed, because a server
 * serves one client at a time, and some (libvfio-user's samples) only one
 * in their life: those are skipped, not failed, when the server stopped
 * listening once its first client left.
 */
import { Command, HeaderFlag, RegionIndex } from '../../protocol/constants.js';
import { decodeHeader, encodeMessage } from '../../protocol/header.js';
import { encodeVersion } from '../../protocol/version.js';
import { encodeDeviceInfoRequest } from '../../protocol/device-info.js';
import { commandName } from '../../client/client.js';
import { errnoName } from './context.js';
import { expect, CheckFailure, CheckSkip, type Check, type CheckContext } from './types.js';

/**
 * Sends one request alone on a new connection; passes when it is refused
 * or the connection closed, fails when it is answered.
 */
async function refusedAlone(ctx: CheckContext, msgId: number, command: Command, payload: Buffer, what: string): Promise<string> {
  const { replies, closed } = await ctx.exchangeAlone([encodeMessage({ msgId, command }, payload)], 1);
  if (closed && replies.length === 0) return 'connection closed';
  expect(replies.length === 1, `no reply to ${what} (msg_id ${msgId}) on a new connection in ${ctx.timeoutMs} ms`);
  const h = decodeHeader(replies[0]);
  expect(h.msgId === msgId && h.command === command, `the reply to ${what} (msg_id ${msgId}) is ${commandName(h.command)} msg_id ${h.msgId}`);
  expect((h.flags & HeaderFlag.ERROR) !== 0, `${what} was accepted`);
  return errnoName(h.errno);
}

/** A 16-byte header with the given size field, sent raw; then a fresh connection must work. */
async function untrustedHeader(ctx: CheckContext, size: number): Promise<string> {
  ctx.disconnect();
  const c = await ctx.client();
  const header = Buffer.alloc(16);
  header.writeUInt16LE(0x4242, 0);
  header.writeUInt16LE(Command.DEVICE_GET_INFO, 2);
  header.writeUInt32LE(size, 4);
  header.writeUInt32LE(HeaderFlag.COMMAND, 8);
  c.sendRaw(header);
  // The connection is the server's to end; ours is done either way.
  await Promise.race([c.whenClosed, new Promise((r) => setTimeout(r, Math.min(ctx.timeoutMs, 500)))]);
  const ended = c.isClosed;
  ctx.disconnect();
  try {
    const fresh = await ctx.client();
    await fresh.deviceInfo();
  } catch (e) {
    if (e instanceof CheckSkip) throw e;
    throw new CheckFailure(`after a header with size ${size}, a new connection fails: ${(e as Error).message}`);
  }
  return ended ? 'connection ended; a new one works' : 'a new connection works';
}

export const CONNECTION_CHECKS: Check[] = [
  {
    id: 'negotiation.bad-major',
    title: 'VERSION with major 1 is refused',
    run: (ctx) => refusedAlone(ctx, 1, Command.VERSION, encodeVersion({ major: 1, minor: 0, capabilities: {} }), 'VERSION 1.0'),
  },
  {
    id: 'negotiation.command-before-version',
    title: 'a command before VERSION is refused',
    run: (ctx) => refusedAlone(ctx, 7, Command.DEVICE_GET_INFO, encodeDeviceInfoRequest({ argsz: 16 }), 'DEVICE_GET_INFO before VERSION'),
  },
  { id: 'hostile.header-too-small', title: 'a header whose size is below 16 bytes', run: (ctx) => untrustedHeader(ctx, 8) },
  { id: 'hostile.header-too-large', title: 'a header whose size is 2 GiB', run: (ctx) => untrustedHeader(ctx, 0x7fffffff) },
  {
    id: 'hostile.still-serving',
    title: 'after everything, a new client negotiates and reads config space',
    async run(ctx) {
      ctx.disconnect();
      const c = await ctx.client();
      const id = await c.regionRead(RegionIndex.CONFIG, 0, 4);
      expect(id.length === 4, 'config read failed');
    },
  },
];
