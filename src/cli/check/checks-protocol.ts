/** Checks of negotiation, device info and region info, on the shared connection. */
import { Command, DeviceInfoFlag, Errno, RegionIndex, RegionInfoFlag } from '../../protocol/constants.js';
import { encodeDeviceInfoRequest } from '../../protocol/device-info.js';
import { encodeRegionInfoRequest } from '../../protocol/region-info.js';
import { expectInSync, expectRefused } from './context.js';
import { expect, type Check } from './types.js';

const isPowerOfTwo = (n: number): boolean => n > 0 && 2 ** Math.round(Math.log2(n)) === n;

export const PROTOCOL_CHECKS: Check[] = [
  {
    id: 'negotiation.version',
    title: 'VERSION is answered with version 0.x and valid capabilities',
    async run(ctx) {
      // The shared connection's own VERSION: a server that serves one client in its life has no other.
      const c = await ctx.client();
      const v = c.versionReply;
      expect(v, 'no VERSION reply recorded');
      expect(v.major === 0, `server speaks version ${v.major}.${v.minor}, want 0.x`);
      const caps = c.server;
      if (caps.pgsizes !== undefined) expect((caps.pgsizes & 4096) !== 0, `pgsizes 0x${caps.pgsizes.toString(16)} lacks 4 KiB`);
      if (caps.maxMsgFds !== undefined) expect(caps.maxMsgFds >= 1, `max_msg_fds ${caps.maxMsgFds}`);
      if (caps.maxDataXferSize !== undefined) expect(caps.maxDataXferSize >= 4, `max_data_xfer_size ${caps.maxDataXferSize}`);
      return `version ${v.major}.${v.minor}, ${JSON.stringify(caps)}`;
    },
  },
  {
    id: 'device.info',
    title: 'DEVICE_GET_INFO: a PCI device with the 9 PCI regions and IRQ indexes',
    async run(ctx) {
      const { info } = await ctx.facts();
      expect(info.flags & DeviceInfoFlag.PCI, `flags 0x${info.flags.toString(16)} lack VFIO_DEVICE_FLAGS_PCI`);
      expect(info.numRegions >= RegionIndex.NUM_PCI_REGIONS, `num_regions ${info.numRegions}, a PCI device has at least ${RegionIndex.NUM_PCI_REGIONS}`);
      expect(info.numIrqs >= 1, `num_irqs ${info.numIrqs}`);
      return `flags 0x${info.flags.toString(16)}, ${info.numRegions} regions, ${info.numIrqs} IRQ indexes`;
    },
  },
  {
    id: 'device.info-small-argsz',
    title: 'DEVICE_GET_INFO with argsz below its struct is refused (EINVAL)',
    async run(ctx) {
      const c = await ctx.client();
      const detail = await expectRefused(c.request(Command.DEVICE_GET_INFO, encodeDeviceInfoRequest({ argsz: 8 })), [Errno.EINVAL], 'argsz 8');
      await expectInSync(c, 'DEVICE_GET_INFO with argsz 8');
      return detail;
    },
  },
  {
    id: 'regions.info',
    title: 'region info: right index, BAR sizes powers of two, a read-write config region',
    async run(ctx) {
      const { regions } = await ctx.facts();
      for (const [i, r] of regions.entries()) {
        expect(r.info.index === i, `region info for index ${i} names index ${r.info.index}`);
        if (i <= RegionIndex.BAR5 && r.info.size > 0) expect(isPowerOfTwo(r.info.size), `BAR ${i} size ${r.info.size} is not a power of two`);
        if (r.info.size === 0) expect((r.info.flags & (RegionInfoFlag.READ | RegionInfoFlag.WRITE)) === 0, `region ${i} has size 0 but flags 0x${r.info.flags.toString(16)}`);
      }
      const cfg = regions[RegionIndex.CONFIG];
      expect(cfg, 'no config region');
      expect(cfg.info.size === 256 || cfg.info.size === 4096, `config region size ${cfg.info.size}, want 256 or 4096`);
      expect((cfg.info.flags & (RegionInfoFlag.READ | RegionInfoFlag.WRITE)) === (RegionInfoFlag.READ | RegionInfoFlag.WRITE), 'config region is not read-write');
      return regions.map((r, i) => `${i}:${r.info.size}`).join(' ');
    },
  },
  {
    id: 'regions.info-bad-index',
    title: 'region info for an index past num_regions is refused (EINVAL)',
    async run(ctx) {
      const { info } = await ctx.facts();
      const c = await ctx.client();
      const index = info.numRegions + 100;
      const detail = await expectRefused(c.request(Command.DEVICE_GET_REGION_INFO, encodeRegionInfoRequest({ argsz: 32, flags: 0, index, capOffset: 0, size: 0, offset: 0 })), [Errno.EINVAL], `index ${index}`);
      await expectInSync(c, 'a bad region index');
      return detail;
    },
  },
  {
    id: 'regions.access-bounds',
    title: 'region accesses past the end are refused, within it served',
    async run(ctx) {
      const { regions } = await ctx.facts();
      const c = await ctx.client();
      const size = regions[RegionIndex.CONFIG].info.size;
      const whole = await c.regionRead(RegionIndex.CONFIG, 0, size);
      expect(whole.length === size, `config read of ${size} bytes returned ${whole.length}`);
      const detail = await expectRefused(c.regionRead(RegionIndex.CONFIG, size - 2, 4), [Errno.EINVAL, Errno.EFAULT, Errno.ERANGE], 'config read across its end');
      await expectInSync(c, 'an access past the end');
      return detail;
    },
  },
];
