/** An NVMe controller served in-process for tests, with our client as its driver. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import type { Client } from '../../src/client/index.js';
import { nvmeController, nvmeControllerOf, serve, type NvmeController, type Server } from '../../src/index.js';
import type { Logger } from '../../src/device/logger.js';
import { connectClient } from './raw.js';
import { NvmeDriver } from './nvme-driver.js';
import { probeRam, type ProbeBackend } from './probe-backend.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-nvme-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;
export const MiB = 1024 * 1024;

export interface Rig {
  backends: ProbeBackend[];
  server: Server;
  client: Client;
  driver: NvmeDriver;
  controller: NvmeController;
}

/**
 * `mmapDoorbells`: the controller's doorbell page is mapped and watched,
 * and the driver rings by storing into its mapping (served with a busy-poll
 * window of `pollIdleMs`, default 1 ms).
 */
export async function rig(o: { size?: number; namespaces?: number; readOnly?: boolean; queues?: number; memory?: 'shared' | 'private'; enable?: boolean; ioQueues?: number; queueEntries?: number; caps?: { discard?: boolean; flush?: boolean }; msix?: boolean; shadowDoorbells?: boolean; pollMicroseconds?: number; mmapDoorbells?: boolean; pollIdleMs?: number; ioeventfdDoorbells?: boolean; log?: Logger } = {}): Promise<Rig> {
  const backends = Array.from({ length: o.namespaces ?? 1 }, () => probeRam(o.size ?? MiB, o.caps));
  const spec = nvmeController({ namespaces: backends, readOnly: o.readOnly, queues: o.queues ?? 4, queueEntries: o.queueEntries, serial: 'SN-TEST-0001', model: 'muser test NVMe', firmware: 'FW1.2', shadowDoorbells: o.shadowDoorbells, pollMicroseconds: o.pollMicroseconds, mmapDoorbells: o.mmapDoorbells, ioeventfdDoorbells: o.ioeventfdDoorbells });
  const server = serve(spec, join(dir, `nvme${serial++}.sock`), { log: o.log ?? 'silent', ...(o.mmapDoorbells ? { poll: { idleMs: o.pollIdleMs ?? 1 } } : {}) });
  const client = await connectClient(server.path);
  const driver = await NvmeDriver.open(client, { memory: o.memory, msix: o.msix });
  if (o.mmapDoorbells) await driver.mapDoorbells();
  if (o.enable ?? true) {
    await driver.enable();
    if (o.ioQueues) await driver.createIoQueues(o.ioQueues);
  }
  return { backends, server, client, driver, controller: nvmeControllerOf(spec)! };
}

export function close(r: Rig | undefined): void {
  if (!r) return;
  r.driver.close();
  r.client.close();
  r.server.close();
}

