/**
 * Hostile messages: each must get an error reply with a fitting errno (or,
 * for a header that cannot be trusted, end that connection), and the server
 * must keep serving.
 */
import { Client } from '../../client/client.js';
import { EventFd } from '../../client/eventfd.js';
import { Command, Errno, HeaderFlag, IrqSetFlag, RegionIndex } from '../../protocol/constants.js';
import { encodeDeviceInfoRequest } from '../../protocol/device-info.js';
import { encodeRegionReadRequest } from '../../protocol/region-access.js';
import { encodeSetIrqsRequest } from '../../protocol/irq.js';
import { expectAlive, expectRefused } from './context.js';
import { expect, CheckFailure, type Check, type CheckContext } from './types.js';

/** Sends one refused request on the shared connection and checks the server lives on. */
function refusal(id: string, title: string, errnos: number[], send: (c: Client) => Promise<unknown>): Check {
  return {
    id,
    title,
    async run(ctx) {
      const c = await ctx.client();
      const detail = await expectRefused(send(c), errnos, title);
      await expectAlive(c, title);
      return detail;
    },
  };
}

/** A 16-byte header with the given size field, sent raw; then a fresh connection must work. */
async function untrustedHeader(ctx: CheckContext, size: number): Promise<string> {
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
    throw new CheckFailure(`after a header with size ${size}, a new connection fails: ${(e as Error).message}`);
  }
  return ended ? 'connection ended; a new one works' : 'a new connection works';
}

const readRequest = (region: number, offset: number, count: number): Buffer => encodeRegionReadRequest({ region, offset, count });

export const HOSTILE_CHECKS: Check[] = [
  refusal('hostile.unknown-command', 'an unknown command number (99)', [Errno.ENOSYS, Errno.EINVAL, Errno.ENOTSUP], (c) => c.request(99, Buffer.alloc(8))),
  refusal('hostile.short-payload', 'REGION_READ with a 4-byte payload', [Errno.EINVAL], (c) => c.request(Command.REGION_READ, Buffer.alloc(4))),
  refusal('hostile.bad-region', 'REGION_READ of region 200', [Errno.EINVAL], (c) => c.request(Command.REGION_READ, readRequest(200, 0, 4))),
  refusal('hostile.count-mismatch', 'REGION_WRITE whose count exceeds its data', [Errno.EINVAL], (c) => {
    const payload = Buffer.alloc(16 + 4);
    payload.writeBigUInt64LE(0n, 0);
    payload.writeUInt32LE(RegionIndex.CONFIG, 8);
    payload.writeUInt32LE(64, 12);
    return c.request(Command.REGION_WRITE, payload);
  }),
  refusal('hostile.huge-count', 'REGION_READ of 2 GiB', [Errno.EINVAL, Errno.E2BIG, Errno.EFAULT, Errno.ERANGE, Errno.ENOMEM, Errno.EMSGSIZE], (c) =>
    c.request(Command.REGION_READ, readRequest(RegionIndex.CONFIG, 0, 0x7fffffff)),
  ),
  refusal('hostile.bad-irq-index', 'SET_IRQS for IRQ index 50', [Errno.EINVAL], (c) =>
    c.request(Command.DEVICE_SET_IRQS, encodeSetIrqsRequest({ argsz: 20, flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index: 50, start: 0, count: 0 })),
  ),
  refusal('hostile.client-sends-dma-read', 'DMA_READ sent by the client (a server-to-client command)', [Errno.EINVAL, Errno.ENOSYS, Errno.ENOTSUP], (c) => c.request(Command.DMA_READ, Buffer.alloc(16))),
  {
    id: 'hostile.unwanted-fds',
    title: 'an fd sent with a command that takes none is answered, not fatal',
    async run(ctx) {
      const c = await ctx.client();
      const stray = new EventFd();
      try {
        await c.request(Command.DEVICE_GET_INFO, encodeDeviceInfoRequest({ argsz: 16 }), [stray.fd]).catch((e: unknown) => {
          if ((e as { errno?: number }).errno === undefined) throw e;
        });
      } catch (e) {
        throw new CheckFailure(`no answer to DEVICE_GET_INFO with a stray fd: ${(e as Error).message}`);
      } finally {
        stray.close();
      }
      await expectAlive(c, 'a stray fd');
    },
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
