/**
 * The `bench` sample, also the benchmark target:
 * - BAR0: 4 KiB of RAM (shared memory, mmappable); reads return what was written;
 * - BAR1: a doorbell: a 32-bit write of N at offset 0 raises vector 0 N times
 *   before the write is answered;
 * - one MSI-X vector and INTx; DMA enabled.
 */
import { DeviceError, Errno, type DeviceSpec } from '../index.js';

/** Most interrupts one doorbell write may ask for, so a client cannot stall the device. */
const MAX_BURST = 1 << 20;

/** Builds the bench device description. */
export function benchDevice(): DeviceSpec {
  return {
    name: 'bench',
    identity: { vendorId: 0x4d55, deviceId: 0x0001, subsystemVendorId: 0x4d55, subsystemId: 0x0001, classCode: 0xff0000 },
    bars: {
      0: { size: 4096, memory: true },
      1: {
        size: 4096,
        read: () => 0,
        write(offset, data, device) {
          if (offset !== 0 || data.length !== 4) return;
          const n = data.readUInt32LE(0);
          if (n > MAX_BURST) throw new DeviceError(Errno.EINVAL, `doorbell: at most ${MAX_BURST} interrupts per write`);
          for (let i = 0; i < n; i++) device.trigger(0);
        },
      },
    },
    capabilities: [{ id: 'pm' }, { id: 'pcie' }],
    interrupts: { intx: true, msix: 1 },
  };
}
