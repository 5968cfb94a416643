/**
 * Checks of DMA_MAP and DMA_UNMAP: maps that work, and maps a careful
 * server refuses, each followed by a request that must still be answered
 * in step. Zero size, ranges off a page boundary and ranges that wrap are
 * EINVAL, as Linux VFIO's type1 IOMMU answers them (the vfio-user spec
 * leaves them to VFIO); a map over a mapped range is EEXIST, as the spec says.
 */
import type { Client } from '../../client/client.js';
import { privateMemory, sharedMemory } from '../../client/guest-memory.js';
import { Command, DmaMapFlag, Errno } from '../../protocol/constants.js';
import { DMA_MAP_SIZE } from '../../protocol/dma.js';
import { expectInSync, expectRefused } from './context.js';
import { CheckFailure, type Check } from './types.js';

/** IOVAs the checks use, far from anything a real client would pick first. */
const IOVA_A = 0x7000_0000;
const IOVA_B = 0x7010_0000;
const SIZE = 64 * 1024;
/** The page size muser check offers in VERSION, so the only one a server may pick. */
const PAGE = 4096;
const RW = DmaMapFlag.READ | DmaMapFlag.WRITE;
/** A range that runs past 2^64. */
const WRAPPING_IOVA = 0xffff_ffff_ffff_0000n;

/** A DMA_MAP payload with 64-bit fields, for ranges a JS number cannot hold. */
function mapPayload(address: bigint | number, size: bigint | number, offset: bigint | number = 0): Buffer {
  const b = Buffer.alloc(DMA_MAP_SIZE);
  b.writeUInt32LE(DMA_MAP_SIZE, 0);
  b.writeUInt32LE(RW, 4);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeBigUInt64LE(BigInt(address), 16);
  b.writeBigUInt64LE(BigInt(size), 24);
  return b;
}

interface BadMap {
  what: string;
  payload: Buffer;
  fd?: number;
}

/**
 * Sends each map, which must be refused with one of `errnos` and leave the
 * connection in step. A map the server took is undone (unmap all, then
 * `restore` maps what the check had mapped) and the rest still tried, so
 * that the failure lists every map that was taken.
 */
async function refusedMaps(c: Client, maps: BadMap[], errnos: readonly number[], restore?: () => Promise<void>): Promise<string> {
  const refused: string[] = [];
  const wrong: string[] = [];
  for (const m of maps) {
    let accepted = false;
    const request = c.request(Command.DMA_MAP, m.payload, m.fd === undefined ? undefined : [m.fd]).then(() => {
      accepted = true;
    });
    try {
      refused.push(await expectRefused(request, errnos, m.what));
    } catch (e) {
      if (!(e instanceof CheckFailure)) throw e;
      wrong.push(e.message);
    } finally {
      if (accepted) {
        await c.dmaUnmap(0, 0, true).catch(() => undefined);
        await restore?.();
      }
    }
    await expectInSync(c, `a refused ${m.what}`);
  }
  if (wrong.length > 0) throw new CheckFailure(wrong.join('; '));
  return refused.join('; ');
}

export const DMA_CHECKS: Check[] = [
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
      await expectInSync(c, 'DMA_MAP with an fd');
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
      await expectInSync(c, 'a bad DMA_UNMAP');
      return detail;
    },
  },
  {
    id: 'dma.map-zero-size',
    title: 'DMA_MAP of zero bytes is refused (EINVAL)',
    async run(ctx) {
      return refusedMaps(await ctx.client(), [{ what: 'DMA_MAP of 0 bytes', payload: mapPayload(IOVA_A, 0) }], [Errno.EINVAL]);
    },
  },
  {
    id: 'dma.map-unaligned',
    title: 'DMA_MAP with an address, size or fd offset off a page boundary is refused (EINVAL)',
    async run(ctx) {
      const c = await ctx.client();
      const memory = sharedMemory(2 * SIZE, 'muser-check');
      try {
        return await refusedMaps(
          c,
          [
            { what: 'DMA_MAP at an unaligned address', payload: mapPayload(IOVA_A + PAGE / 2, SIZE) },
            { what: 'DMA_MAP of an unaligned size', payload: mapPayload(IOVA_A, SIZE + PAGE / 2) },
            { what: 'DMA_MAP at an unaligned fd offset', payload: mapPayload(IOVA_A, SIZE, PAGE / 2), fd: memory.fd },
          ],
          [Errno.EINVAL],
        );
      } finally {
        memory.close();
      }
    },
  },
  {
    id: 'dma.map-wrap',
    title: 'DMA_MAP of a range that wraps past 2^64 is refused (EINVAL)',
    async run(ctx) {
      return refusedMaps(await ctx.client(), [{ what: 'DMA_MAP wrapping past 2^64', payload: mapPayload(WRAPPING_IOVA, 2 * SIZE) }], [Errno.EINVAL]);
    },
  },
  {
    id: 'dma.map-overlap',
    title: 'DMA_MAP over a mapped range (the same range, its tail, its head, around it, inside it) is refused (EEXIST)',
    async run(ctx) {
      const c = await ctx.client();
      const mapA = (): Promise<void> => c.dmaMapRaw(IOVA_A, SIZE, RW, 0);
      await mapA();
      try {
        return await refusedMaps(
          c,
          [
            { what: 'DMA_MAP of a mapped range again', payload: mapPayload(IOVA_A, SIZE) },
            { what: 'DMA_MAP over the tail of a map', payload: mapPayload(IOVA_A + PAGE, SIZE) },
            { what: 'DMA_MAP over the head of a map', payload: mapPayload(IOVA_A - PAGE, SIZE) },
            { what: 'DMA_MAP around a map', payload: mapPayload(IOVA_A - PAGE, SIZE + 2 * PAGE) },
            { what: 'DMA_MAP inside a map', payload: mapPayload(IOVA_A + PAGE, PAGE) },
          ],
          // The spec: "A command to map over an existing region must be failed by the server with EEXIST".
          [Errno.EEXIST],
          mapA,
        );
      } finally {
        await c.dmaUnmap(0, 0, true).catch(() => {});
      }
    },
  },
];
