/**
 * The README's example device: a counter that raises an interrupt and
 * copies guest memory by DMA. Run it: `npx muser run counter /tmp/counter.sock`.
 */
import { defineRegisters, type DeviceSpec } from '../index.js';

/** BAR0 registers: 0 count (read), 4 increment by value (write), 8 DMA address (write, 8 bytes). */
export function counterDevice(): DeviceSpec {
  // The count lives in `state`, where live migration can see it (a closure variable would be lost).
  const state = { count: 0 };
  const registers = defineRegisters([
    { name: 'count', offset: 0, width: 4, access: 'ro', read: () => state.count },
    {
      name: 'increment', offset: 4, width: 4, access: 'wo',
      write(value, device) {
        state.count = (state.count + value) >>> 0;
        device.trigger(0); // MSI-X vector 0, or INTx, whichever the client enabled
      },
    },
    {
      name: 'dma_address', offset: 8, width: 8, access: 'wo', widths: [8], // a half-written address must not start DMA
      async write(address, device) {
        const bytes = await device.dma.read(Number(address), 16); // zero-copy map or DMA_READ message
        await device.dma.write(Number(address) + 16, bytes.reverse());
      },
    },
  ]);
  return {
    name: 'counter',
    identity: { vendorId: 0x1af4, deviceId: 0x10ff, classCode: 0xff0000 },
    state,
    bars: {
      0: registers.bar({ size: 4096 }),
      2: { size: 8192, memory: true }, // shared memory the client may mmap
    },
    capabilities: [{ id: 'pm' }, { id: 'pcie' }],
    interrupts: { intx: true, msix: 4 },
  };
}
