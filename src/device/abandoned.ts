/**
 * The rule every device reset follows for the requests it abandons
 * (virtio 1.2, 2.4: after a reset the device does not touch the driver's
 * buffers again): the reset completes, and its reply goes out, only when
 * none of them can still write guest memory.
 *
 * Their writes through copies (status bytes, used rings, completion
 * entries, bounce buffers) are dropped by the device code once a reset
 * abandoned them. Their zero-copy views cannot be called back from a
 * backend that is filling them (a file read on the thread pool, an NBD
 * reply), so the reset waits until those requests settle, at most
 * `timeoutMs`. Past that the guest memory they hold is revoked (see
 * DmaTable.revokePinned): their views then cover scratch memory, their
 * late data lands there, and the reset completes. Where memory cannot be
 * revoked, the reset keeps waiting: it is never answered while an
 * abandoned request could still write guest memory.
 */
import type { Device } from './device.js';

/** How long a reset waits for the requests it abandons before revoking their memory, by default. */
export const DEFAULT_RESET_TIMEOUT_MS = 30_000;

/** Options of {@link settleAbandoned}. */
export interface SettleOptions {
  /** The device whose client memory the requests hold (undefined: none ever connected). */
  device: Device | undefined;
  timeoutMs: number;
  /** Where to say that memory was revoked, or could not be. */
  log(message: string): void;
}

/**
 * Resolves once the abandoned requests (`settled` resolves when they have)
 * can no longer write guest memory: when they settled, or, after
 * `timeoutMs`, once their memory is revoked.
 */
export async function settleAbandoned(settled: Promise<void>, o: SettleOptions): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), o.timeoutMs).unref()));
  const stuck = await Promise.race([settled.then(() => false), late]);
  clearTimeout(timer);
  if (!stuck) return;
  const r = o.device?.revokePinnedDma();
  // The scratch memory their old views now cover is freed once they are done with it.
  if (r) void settled.then(r.release);
  if (r && r.failed.length > 0) {
    o.log(`requests a reset abandoned did not finish within ${o.timeoutMs} ms, and their memory cannot be revoked (${r.failed.join('; ')}): the reset waits for them`);
    await settled;
    return;
  }
  o.log(`requests a reset abandoned did not finish within ${o.timeoutMs} ms: ${r?.revoked ?? 0} DMA region(s) revoked from under them; the reset completes`);
}

/** Checks a `resetTimeoutMs` option; returns it or the default. */
export function resetTimeout(ms: number | undefined): number {
  if (ms === undefined) return DEFAULT_RESET_TIMEOUT_MS;
  if (!Number.isFinite(ms) || ms <= 0 || ms > 3_600_000) throw new RangeError(`resetTimeoutMs must be in (0, 3600000], got ${ms}`);
  return ms;
}
