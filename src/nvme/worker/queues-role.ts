/**
 * The NVMe queue role of a device worker thread: opens its own backend
 * for each namespace over the shared storage, then serves the I/O queues
 * the main thread gives it. Doorbells come by message (register writes,
 * the mapped doorbell page) or on the queue's ioeventfd (slot = the
 * doorbell's index).
 */
import { openSharedBackend } from '../../block/open-shared.js';
import type { RoleHandlers, StartRole } from '../../device/threads/runtime.js';
import { Namespace } from '../namespace.js';
import type { AskNvmeThread, NvmeRoleData, ToNvmeThread } from './messages.js';
import { ThreadQueues } from './thread-queues.js';

export const startRole: StartRole = async (rt, raw) => {
  const data = raw as NvmeRoleData;
  const namespaces: Namespace[] = [];
  for (const [i, n] of data.namespaces.entries()) namespaces.push(new Namespace(i + 1, await openSharedBackend(n.backend), { readOnly: n.readOnly, lbaSize: n.lbaSize, serial: data.serial }));
  const queues = new ThreadQueues(rt, data, namespaces);
  rt.onDoorbell = (slot) => queues.kick(slot);
  const handlers: RoleHandlers = {
    message: (m) => queues.message(m as ToNvmeThread),
    ask: (m) => queues.ask(m as AskNvmeThread),
  };
  return handlers;
};
