/**
 * Hostile messages on the shared connection: each must get an error reply
 * with a fitting errno, and the connection must stay in step. (Headers that
 * cannot be trusted end a connection: see checks-connection.ts.)
 */
import type { Client } from '../../client/client.js';
import { EventFd } from '../../client/eventfd.js';
import { Command, Errno, IrqSetFlag, RegionIndex } from '../../protocol/constants.js';
import { encodeDeviceInfoRequest } from '../../protocol/device-info.js';
import { encodeRegionReadRequest } from '../../protocol/region-access.js';
import { encodeSetIrqsRequest } from '../../protocol/irq.js';
import { expectInSync, expectRefused } from './context.js';
import { CheckFailure, type Check } from './types.js';

/** Sends one refused request on the shared connection and checks the server lives on. */
function refusal(id: string, title: string, errnos: number[], send: (c: Client) => Promise<unknown>): Check {
  return {
    id,
    title,
    async run(ctx) {
      const c = await ctx.client();
      const detail = await expectRefused(send(c), errnos, title);
      await expectInSync(c, title);
      return detail;
    },
  };
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
      await expectInSync(c, 'a stray fd');
    },
  },
];
