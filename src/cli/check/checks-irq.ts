/** Checks of IRQ info and SET_IRQS. */
import { EventFd } from '../../client/eventfd.js';
import { Command, Errno, IrqIndex, IrqInfoFlag, IrqSetFlag } from '../../protocol/constants.js';
import { encodeIrqInfoRequest } from '../../protocol/irq.js';
import { expectInSync, expectRefused } from './context.js';
import { expect, CheckSkip, type Check } from './types.js';

export const IRQ_CHECKS: Check[] = [
  {
    id: 'irq.info',
    title: 'IRQ info for each index: right index, INTx at most one vector, eventfd-capable',
    async run(ctx) {
      const { info } = await ctx.facts();
      const c = await ctx.client();
      const counts: string[] = [];
      for (let i = 0; i < Math.min(info.numIrqs, IrqIndex.NUM); i++) {
        const irq = await c.irqInfo(i);
        expect(irq.index === i, `IRQ info for index ${i} names index ${irq.index}`);
        if (i === IrqIndex.INTX) expect(irq.count <= 1, `INTx has ${irq.count} vectors`);
        if (irq.count > 0) expect(irq.flags & IrqInfoFlag.EVENTFD, `IRQ index ${i} has vectors but no EVENTFD flag`);
        counts.push(`${IrqIndex[i]}:${irq.count}`);
      }
      return counts.join(' ');
    },
  },
  {
    id: 'irq.info-bad-index',
    title: 'IRQ info for an index past num_irqs is refused (EINVAL)',
    async run(ctx) {
      const { info } = await ctx.facts();
      const c = await ctx.client();
      const index = Math.max(info.numIrqs, IrqIndex.NUM) + 10;
      const detail = await expectRefused(c.request(Command.DEVICE_GET_IRQ_INFO, encodeIrqInfoRequest({ argsz: 16, flags: 0, index, count: 0 })), [Errno.EINVAL], `IRQ index ${index}`);
      await expectInSync(c, 'a bad IRQ index');
      return detail;
    },
  },
  {
    id: 'irq.set-eventfd',
    title: 'SET_IRQS routes vector 0 to an eventfd and disables it again',
    async run(ctx) {
      const c = await ctx.client();
      let index: number | undefined;
      for (const i of [IrqIndex.MSIX, IrqIndex.MSI, IrqIndex.INTX]) {
        if ((await c.irqInfo(i).catch(() => ({ count: 0 }))).count > 0) {
          index = i;
          break;
        }
      }
      if (index === undefined) throw new CheckSkip('no interrupt vectors');
      const irq = new EventFd();
      try {
        await c.setIrqEventfds(index, 0, [irq.fd]);
        await c.disableIrqs(index);
      } finally {
        irq.close();
      }
      return `${IrqIndex[index]} vector 0`;
    },
  },
  {
    id: 'irq.set-out-of-range',
    title: 'SET_IRQS for vectors past the count is refused (EINVAL)',
    async run(ctx) {
      const c = await ctx.client();
      const irq = await c.irqInfo(IrqIndex.INTX);
      const detail = await expectRefused(c.setIrqs(IrqIndex.INTX, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, irq.count + 4, 1), [Errno.EINVAL], `INTx vector ${irq.count + 4}`);
      await expectInSync(c, 'SET_IRQS out of range');
      return detail;
    },
  },
];

