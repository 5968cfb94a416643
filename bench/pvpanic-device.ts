/**
 * python/examples/pvpanic.py written in TypeScript, for the bench: the same
 * identity and the same register table (a read callback and a write
 * callback on one byte), so the two differ only in where the callbacks run.
 */
import { defineRegisters, type DeviceSpec } from '../src/index.js';

const PANICKED = 1 << 0;
const CRASH_LOADED = 1 << 1;

export default function pvpanic(): DeviceSpec {
  const registers = defineRegisters([
    {
      name: 'events', offset: 0, width: 1,
      read: () => PANICKED | CRASH_LOADED,
      write(value) {
        if (value & PANICKED) process.stderr.write('[pvpanic] info: guest panicked\n');
      },
    },
  ]);
  return {
    name: 'pvpanic',
    identity: { vendorId: 0x1b36, deviceId: 0x0011, classCode: 0x088000, revision: 1 },
    bars: { 0: registers.bar({ size: 16 }) },
  };
}
