/** Checks of DMA_MAP / DMA_UNMAP and of IRQ info and SET_IRQS. */
import { EventFd } from '../../client/eventfd.js';
import { privateMemory, sharedMemory } from '../../client/guest-memory.js';
import { Command, DmaMapFlag, Errno, IrqIndex, IrqInfoFlag, IrqSetFlag } from '../../protocol/constants.js';
import { encodeIrqInfoRequest } from '../../protocol/irq.js';
import { expectAlive, expectRefused } from './context.js';
import { expect, CheckSkip, type Check } from './types.js';

/** IOVAs the checks use, far from anything a real client would pick first. */
const IOVA_A = 0x7000_0000;
const IOVA_B = 0x7010_0000;
const SIZE = 64 * 1024;
const RW = DmaMapFlag.READ | DmaMapFlag.WRITE;

export const DMA_IRQ_CHECKS: Check[] = [
  {
    id: 'dma.map-fd',
    title: 'DMA_MAP with a memfd, then DMA_UNMAP',
    async run(ctx) {
      const c = await ctx.client();
      const memory = sharedMemory(SIZE, 'muser-check');
      try {
        await c.dmaMapRaw(IOVA_A, SIZE, RW, 0, memory.fd);
        await c.dmaUnmap(IOVA_A, SIZE);
      } finally {
        memory.close();
      }
      await expectAlive(c, 'DMA_MAP with an fd');
    },
  },
  {
    id: 'dma.map-no-fd',
    title: 'DMA_MAP without an fd (memory served by messages), then DMA_UNMAP',
    async run(ctx) {
      const c = await ctx.client();
      const memory = privateMemory(SIZE);
      try {
        await c.dmaMap(IOVA_B, memory);
        await c.dmaUnmap(IOVA_B, SIZE);
      } finally {
        memory.close();
      }
    },
  },
  {
    id: 'dma.unmap-unknown',
    title: 'DMA_UNMAP of a range never mapped is refused',
    async run(ctx) {
      const c = await ctx.client();
      const detail = await expectRefused(c.dmaUnmap(IOVA_A + 0x100_0000, 4096), [Errno.ENOENT, Errno.EINVAL], 'unmap of an unmapped range');
      await expectAlive(c, 'a bad DMA_UNMAP');
      return detail;
    },
  },
  {
    id: 'dma.map-overlap',
    title: 'DMA_MAP overlapping a mapped range is refused',
    async run(ctx) {
      const c = await ctx.client();
      await c.dmaMapRaw(IOVA_A, SIZE, RW, 0);
      try {
        return await expectRefused(c.dmaMapRaw(IOVA_A + 4096, SIZE, RW, 0), [Errno.EEXIST, Errno.EINVAL], 'an overlapping DMA_MAP');
      } finally {
        await c.dmaUnmap(IOVA_A, SIZE).catch(() => {});
      }
    },
  },
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
      await expectAlive(c, 'a bad IRQ index');
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
      await expectAlive(c, 'SET_IRQS out of range');
      return detail;
    },
  },
];

