/** Checks of negotiation, device info and region info. */
import { Command, DeviceInfoFlag, Errno, HeaderFlag, RegionIndex, RegionInfoFlag } from '../../protocol/constants.js';
import { encodeMessage, decodeHeader } from '../../protocol/header.js';
import { decodeVersion, encodeVersion } from '../../protocol/version.js';
import { encodeDeviceInfoRequest } from '../../protocol/device-info.js';
import { encodeRegionInfoRequest } from '../../protocol/region-info.js';
import { expectAlive, expectRefused, errnoName } from './context.js';
import { rawExchange } from './raw.js';
import { expect, type Check } from './types.js';

const isPowerOfTwo = (n: number): boolean => n > 0 && 2 ** Math.round(Math.log2(n)) === n;

export const PROTOCOL_CHECKS: Check[] = [
  {
    id: 'negotiation.version',
    title: 'VERSION is answered with version 0.x and valid capabilities',
    async run(ctx) {
      const request = encodeMessage({ msgId: 0x1234, command: Command.VERSION }, encodeVersion({ major: 0, minor: 1, capabilities: { maxMsgFds: 8, maxDataXferSize: 1 << 20, pgsizes: 4096 } }));
      const { replies, closed } = await rawExchange(ctx.path, [request], 1, ctx.timeoutMs);
      expect(replies.length === 1, closed ? 'the server closed the connection instead of answering VERSION' : 'no reply to VERSION');
      const h = decodeHeader(replies[0]);
      expect(h.command === Command.VERSION && h.msgId === 0x1234, `reply is command ${h.command} msg_id ${h.msgId}, want VERSION with msg_id 0x1234`);
      expect((h.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.REPLY, 'the VERSION answer is not flagged as a reply');
      expect(!(h.flags & HeaderFlag.ERROR), `VERSION refused: ${errnoName(h.errno)}`);
      let v;
      try {
        v = decodeVersion(replies[0].subarray(16, h.size));
      } catch (e) {
        expect(false, `VERSION reply does not decode: ${(e as Error).message}`);
      }
      expect(v.major === 0, `server speaks version ${v.major}.${v.minor}, want 0.x`);
      const caps = v.capabilities;
      if (caps.pgsizes !== undefined) expect((caps.pgsizes & 4096) !== 0, `pgsizes 0x${caps.pgsizes.toString(16)} lacks 4 KiB`);
      if (caps.maxMsgFds !== undefined) expect(caps.maxMsgFds >= 1, `max_msg_fds ${caps.maxMsgFds}`);
      if (caps.maxDataXferSize !== undefined) expect(caps.maxDataXferSize >= 4, `max_data_xfer_size ${caps.maxDataXferSize}`);
      return `version ${v.major}.${v.minor}, ${JSON.stringify(caps)}`;
    },
  },
  {
    id: 'negotiation.bad-major',
    title: 'VERSION with major 1 is refused',
    async run(ctx) {
      const request = encodeMessage({ msgId: 1, command: Command.VERSION }, encodeVersion({ major: 1, minor: 0, capabilities: {} }));
      const { replies, closed } = await rawExchange(ctx.path, [request], 1, ctx.timeoutMs);
      if (closed && replies.length === 0) return 'connection closed';
      expect(replies.length === 1, 'no reply to VERSION 1.0');
      const h = decodeHeader(replies[0]);
      expect((h.flags & HeaderFlag.ERROR) !== 0, 'VERSION 1.0 was accepted');
      return errnoName(h.errno);
    },
  },
  {
    id: 'negotiation.command-before-version',
    title: 'a command before VERSION is refused',
    async run(ctx) {
      const request = encodeMessage({ msgId: 7, command: Command.DEVICE_GET_INFO }, encodeDeviceInfoRequest({ argsz: 16 }));
      const { replies, closed } = await rawExchange(ctx.path, [request], 1, ctx.timeoutMs);
      if (closed && replies.length === 0) return 'connection closed';
      expect(replies.length === 1, 'no reply to DEVICE_GET_INFO before VERSION');
      const h = decodeHeader(replies[0]);
      expect((h.flags & HeaderFlag.ERROR) !== 0, 'DEVICE_GET_INFO before VERSION was answered');
      return errnoName(h.errno);
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
      await expectAlive(c, 'DEVICE_GET_INFO with argsz 8');
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
      await expectAlive(c, 'a bad region index');
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
      await expectAlive(c, 'an access past the end');
      return detail;
    },
  },
];
