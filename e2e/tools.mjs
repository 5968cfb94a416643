// @ts-check
/**
 * e2e/tools.mjs - muser's own tools against what the guest saw: `muser
 * lspci` (text and --json, run before QEMU connects) compared with the
 * guest's view of the function, and `muser trace` standing between QEMU and
 * the device.
 */
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { guestPci, HEX, muser, stopProcess } from './harness.mjs';

/** @typedef {import('./harness.mjs').Run} Run */

/** Capability ids from a config space dump (hex bytes). @param {number[]} cfg */
function capsOf(cfg) {
  const ids = [];
  if (!(cfg[6] & 0x10)) return ids;
  let p = cfg[0x34] & 0xfc;
  const seen = new Set();
  while (p >= 0x40 && p < 256 && !seen.has(p)) {
    seen.add(p);
    ids.push(cfg[p]);
    p = cfg[p + 1] & 0xfc;
  }
  return ids;
}

/**
 * `muser trace` stood between QEMU and the device: it saw the session both
 * ways, fds included, and its --stats summary counts what it saw.
 * @param {Run} r @param {import('node:child_process').ChildProcess} tracer
 */
export async function checkTrace(r, tracer) {
  await stopProcess(tracer);
  /** @type {any[]} */
  const lines = [];
  for (const l of r.extraLogs.trace ?? []) {
    try {
      lines.push(JSON.parse(l));
    } catch {
      /* its "muser: tracing" line */
    }
  }
  const events = lines.filter((l) => l.command !== undefined);
  const has = (/** @type {(e: any) => boolean} */ pred) => events.some(pred);
  r.assert(has((e) => e.command === 'version' && e.dir === 'c>s') && has((e) => e.command === 'version' && e.type === 'reply'), `muser trace: QEMU negotiated through the proxy (${events.length} messages traced)`, `${events.length} messages`);
  r.assert(has((e) => e.command === 'region_write' && e.fields.region === 2) && has((e) => e.command === 'region_read' && e.type === 'reply' && e.fields.region === 2 && typeof e.latencyUs === 'number'), 'muser trace: decoded BAR 2 register accesses with reply latencies', '');
  r.assert(has((e) => e.command === 'device_set_irqs' && e.fds > 0), 'muser trace: the INTx eventfd went through the proxy', '');
  r.assert(has((e) => (e.command === 'dma_read' || e.command === 'dma_write') && e.dir === 's>c'), "muser trace: the device's DMA_READ/DMA_WRITE reached QEMU through the proxy", '');
  const stats = lines.find((l) => l.stats)?.stats;
  r.assert(Array.isArray(stats) && stats.some((/** @type {any} */ s) => s.command === 'region_read' && s.p50Us !== undefined), 'muser trace --stats: per-command counts and latency percentiles', JSON.stringify(stats));
}

/** `muser lspci SOCK` and `muser lspci --json SOCK`, before QEMU connects. @param {Run} r */
export async function runLspci(r) {
  const text = await muser(['lspci', r.sock]);
  const json = await muser(['lspci', '--json', r.sock]);
  createWriteStream(join(r.dir, 'lspci.txt')).end(`${text.out}${text.err}\n${json.out}${json.err}`);
  if (text.code === 0) r.lspciText = text.out;
  else r.lspciNote = `muser lspci exited ${text.code}: ${text.err.trim().split('\n')[0]}`;
  try {
    if (json.code === 0) r.lspciData = JSON.parse(json.out);
    else r.lspciNote = `muser lspci --json exited ${json.code}: ${json.err.trim().split('\n')[0]}`;
  } catch (e) {
    r.lspciNote = `muser lspci --json printed no JSON: ${/** @type {Error} */ (e).message}`;
  }
}

/** Compares what `muser lspci` printed with what the guest saw. @param {Run} r @param {number} vendor @param {number} device */
export function checkLspci(r, vendor, device) {
  const mine = guestPci(r).find((p) => Number(p.vendor) === vendor && Number(p.device) === device);
  if (!mine) return r.assert(false, 'muser lspci agrees with the guest', 'the guest did not see the device');
  const d = r.lspciData;
  if (!d) return r.assert(false, 'muser lspci agrees with the guest', r.lspciNote ?? 'no lspci output');
  const cfgLine = r.guest('E2E-CFG:').find((l) => l.startsWith(mine.bdf + ' '));
  const cfg = (cfgLine ?? '').slice(mine.bdf.length + 1).trim().split(/\s+/).map((h) => parseInt(h, 16));
  const guestCaps = capsOf(cfg).map((i) => HEX(i, 2)).join(',') || 'none';
  const guestBars = r.guest('E2E-BAR:').filter((l) => l.startsWith(mine.bdf + ' ')).map((l) => l.slice(mine.bdf.length + 1).replace(/ (prefetch|64bit)/g, ''));
  const guestIds = `${HEX(Number(mine.vendor))}:${HEX(Number(mine.device))} subsystem ${HEX(Number(mine.subvendor))}:${HEX(Number(mine.subdevice))} class ${HEX(Number(mine.class), 6)}`;
  const ids = `${HEX(d.vendorId)}:${HEX(d.deviceId)} subsystem ${HEX(d.subsystemVendorId)}:${HEX(d.subsystemId)} class ${HEX(d.classCode, 6)}`;
  r.assert(ids === guestIds, `muser lspci ids agree with the guest: ${guestIds}`, `lspci: ${ids}`);
  const bars = d.bars.map((/** @type {any} */ b) => `bar=${b.index} kind=${b.kind === 'io' ? 'io' : 'mem'} size=${b.size}`);
  r.assert(JSON.stringify(bars) === JSON.stringify(guestBars), `muser lspci BARs agree with the guest: ${guestBars.join('; ')}`, `lspci: ${bars.join('; ')}`);
  const caps = d.capabilities.map((/** @type {any} */ c) => HEX(c.id, 2)).join(',') || 'none';
  const names = d.capabilities.map((/** @type {any} */ c) => c.name).join(', ');
  r.assert(caps === guestCaps, `muser lspci capabilities agree with the guest: [${guestCaps}]${names ? ` (${names})` : ''}`, `lspci: [${caps}] (${names})`);
  const t = r.lspciText ?? '';
  const regions = (t.match(/^\s*Region \d+: /gm) ?? []).length;
  const name = `Device ${vendor.toString(16).padStart(4, '0')}:${device.toString(16).padStart(4, '0')}`;
  r.assert(t.includes(name) && regions === guestBars.length, `muser lspci text shows "${name}" and ${guestBars.length} region line(s)`, t.split('\n').slice(0, 8).join('\n       '));
}
