/**
 * The README's example device: a counter that raises an interrupt and
 * copies guest memory by DMA. Run it: `npx muser run counter /tmp/counter.sock`.
 */
import type { DeviceSpec } from '../server/spec.js';

/** BAR0 registers: 0 count (read), 4 increment by value (write), 8 DMA address (write, 8 bytes). */
export function counterDevice(): DeviceSpec {
  // The count lives in `state`, where live migration can see it (a closure variable would be lost).
  const state = { count: 0 };
  return {
    name: 'counter',
    identity: { vendorId: 0x1af4, deviceId: 0x10ff, classCode: 0xff0000 },
    state,
    bars: {
      0: {
        size: 4096,
        read: (offset) => (offset === 0 ? state.count : 0),
        async write(offset, data, device) {
          if (offset === 4) {
            state.count += data.readUInt32LE(0);
            device.trigger(0); // MSI-X vector 0, or INTx, whichever the client enabled
          } else if (offset === 8) {
            const address = Number(data.readBigUInt64LE(0));
            const bytes = await device.dma.read(address, 16); // zero-copy map or DMA_READ message
            await device.dma.write(address + 16, bytes.reverse());
          }
        },
      },
      2: { size: 8192, memory: true }, // shared memory the client may mmap
    },
    capabilities: [{ id: 'pm' }, { id: 'pcie' }],
    interrupts: { intx: true, msix: 4 },
  };
}
