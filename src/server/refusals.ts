/**
 * Refused guest accesses, warned about by default: QEMU only logs
 * `vfio_region_read failed` and the guest reads all-ones, so the device's
 * side must say which register, offset and width. Rate-limited per client
 * (device/rate-limited-warnings.ts), so a driver hammering an unmapped
 * offset cannot flood the log.
 */
import type { Logger } from '../device/logger.js';
import { RateLimitedWarnings } from '../device/rate-limited-warnings.js';
import { Command } from '../protocol/constants.js';
import type { Header } from '../protocol/header.js';

/** Warns about refused region accesses (rate-limited per client). */
export class RefusalWarnings {
  private readonly limited: RateLimitedWarnings;

  constructor(log: Logger) {
    this.limited = new RateLimitedWarnings(() => log, 'refused region accesses');
  }

  /** True when `header` is a region access: its refusal is warned about (else only traced). */
  static isRegionAccess(command: number): boolean {
    return command === Command.REGION_READ || command === Command.REGION_WRITE || command === Command.REGION_WRITE_MULTI;
  }

  /** Warns that the access in `payload` was refused because of `reason`. */
  warn(header: Header, payload: Buffer, reason: string): void {
    const guest = header.command === Command.REGION_READ ? ' (the guest reads all-ones)' : ' (the write is lost)';
    this.limited.warn(`${describeAccess(header.command, payload)} refused${guest}: ${reason}`);
  }
}

/** `REGION_READ of region 0 at 0x5 (2 bytes)`, from the request's header fields (offset u64, region u32, count u32). */
function describeAccess(command: number, payload: Buffer): string {
  const name = Command[command] ?? `command ${command}`;
  if (command === Command.REGION_WRITE_MULTI || payload.length < 16) return name;
  const offset = payload.readBigUInt64LE(0);
  const region = payload.readUInt32LE(8);
  const count = payload.readUInt32LE(12);
  return `${name} of region ${region} at 0x${offset.toString(16)} (${count} byte${count === 1 ? '' : 's'})`;
}
