/**
 * The doorbell role of a device worker thread: runs the device author's
 * doorbell handlers (`ioeventfds: [{ worker }]`) with guest memory and
 * interrupts of their own.
 */
import { DeviceError, Errno } from '../errors.js';
import type { DoorbellContext, DoorbellHandler, DoorbellRoleData, FromDoorbells } from './doorbell.js';
import type { RoleHandlers, StartRole } from './runtime.js';

export const startRole: StartRole = async (rt, raw) => {
  const data = raw as DoorbellRoleData;
  const handlers = new Map<number, DoorbellHandler>();
  for (const d of data.doorbells) {
    const mod = (await import(d.module)) as { createDoorbellHandler?: (data: unknown) => DoorbellHandler | Promise<DoorbellHandler> };
    if (typeof mod.createDoorbellHandler !== 'function') throw new DeviceError(Errno.EINVAL, `${d.module} does not export createDoorbellHandler(data)`);
    const h = await mod.createDoorbellHandler(d.data);
    if (typeof h !== 'function') throw new DeviceError(Errno.EINVAL, `createDoorbellHandler of ${d.module} did not return a function`);
    handlers.set(d.slot, h);
  }
  const ctx: DoorbellContext = {
    dma: rt.dma,
    trigger: (vector) => rt.signal(vector, { t: 'trigger', vector } satisfies FromDoorbells),
  };
  // A handler that throws or rejects is logged by the main thread; the thread serves on.
  const fail = (slot: number, e: unknown): void => rt.post({ t: 'error', slot, message: e instanceof Error ? e.message : String(e) } satisfies FromDoorbells);
  rt.onDoorbell = (slot, count) => {
    const h = handlers.get(slot);
    if (!h) return;
    try {
      const r = h(count, ctx);
      if (r instanceof Promise) r.catch((e: unknown) => fail(slot, e));
    } catch (e) {
      fail(slot, e);
    }
  };
  const none: RoleHandlers = { message() {}, ask: async () => undefined };
  return none;
};
