// @ts-check
/**
 * e2e/scenario.mjs NAME - one end-to-end scenario: starts a muser sample
 * device (`node dist/src/cli/main.js run SAMPLE SOCK -v`), asks it what it
 * is (muser lspci, and a muser client), boots the e2e guest under QEMU's
 * vfio-user-pci against it (TCG), answers the guest's requests (E2E-REQ
 * lines: change the device's inputs, stop/continue the device process),
 * then asserts on the guest's serial output, the device's log and QEMU's
 * trace. Prints one PASS/FAIL line per assertion; exits 1 on any FAIL.
 *
 * Environment: E2E_CACHE (see lib.sh), E2E_INITRD (from build-guest.sh),
 * E2E_LOGS (where logs go; default /tmp/muser-e2e-logs), E2E_BOOT_TIMEOUT
 * (seconds, default 150).
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { virtioScenarios } from './virtio.mjs';
import { nvmeScenarios } from './nvme.mjs';
import { nbdScenarios } from './nbd.mjs';
import { vmScenarios } from './vm.mjs';
import { pvpanicScenarios } from './pvpanic.mjs';
import { isolateScenarios } from './isolate.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const CLI = join(REPO, 'dist/src/cli/main.js');

/**
 * @typedef {{ sample: string, tests: string, sharedRam: boolean, what: string,
 *   check: (r: Run) => void | Promise<void>, whileRunning?: (r: Run) => Promise<void>,
 *   extraDevices?: string[], traced?: boolean, flow?: (r: Run, h: Harness) => Promise<void> }} Scenario
 * A scenario with a `flow` runs that instead of the one-device, one-boot
 * sequence of main(): it starts its own devices and boots as often as it needs.
 */

/** @type {Record<string, Scenario>} */
const SCENARIOS = {
  gpio: {
    what: 'gpio sample, Linux gpio-pci-idio-16, guest RAM shared (memfd)',
    sample: 'gpio',
    tests: 'gpio,dma',
    sharedRam: true,
    check: (r) => {
      checkGpio(r);
      checkDma(r, { selftestVia: 'direct' });
    },
  },
  'gpio-unshared': {
    what: 'gpio sample, guest RAM not shared: every DMA region without an fd',
    sample: 'gpio',
    tests: 'gpio,dma',
    sharedRam: false,
    traced: true,
    check: (r) => {
      checkGpio(r);
      checkDma(r, { selftestVia: 'message' });
      const maps = r.trace.filter((l) => l.startsWith('vfio_user_dma_map')).length;
      r.assert(maps > 0, `QEMU sent DMA_MAP (${maps} in its trace) and the session lived on`, '');
    },
  },
  bench: {
    what: 'bench sample: BAR 0 RAM through resource0; e2e posted-write device: REGION_WRITE_MULTI',
    sample: 'bench',
    tests: 'bench',
    sharedRam: true,
    check: checkBench,
    whileRunning: benchMemoryAfter,
    extraDevices: ['posted'],
  },
  ...virtioScenarios(),
  ...nvmeScenarios(),
  ...nbdScenarios(),
  ...vmScenarios(),
  ...pvpanicScenarios(),
  ...isolateScenarios(),
};

const HEX = (/** @type {number} */ v, d = 4) => `0x${v.toString(16).padStart(d, '0')}`;

/** One run: processes, logs, and the assertion tally. */
class Run {
  /** @param {string} name @param {Scenario} sc */
  constructor(name, sc) {
    this.name = name;
    this.sc = sc;
    this.dir = join(process.env.E2E_LOGS ?? '/tmp/muser-e2e-logs', name);
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    this.sock = join(this.dir, `${sc.sample}.sock`);
    /** @type {string[]} */ this.serial = [];
    /** @type {string[]} */ this.device = [];
    /** @type {string[]} */ this.trace = [];
    /** @type {string[]} */ this.qemuErrors = [];
    this.passed = 0;
    this.failed = 0;
    /** @type {string | undefined} */ this.lspciText = undefined;
    /** @type {any} */ this.lspciData = undefined;
    /** @type {string | undefined} */ this.lspciNote = undefined;
    /** @type {Record<string, unknown>} */ this.extra = {};
    /** @type {Record<string, string[]>} */ this.extraLogs = {};
    this.qemuExit = /** @type {number | null} */ (null);
  }

  /** @param {boolean} ok @param {string} what @param {string} detail */
  assert(ok, what, detail) {
    if (ok) this.passed++;
    else this.failed++;
    console.log(`${ok ? 'PASS' : 'FAIL'} [${this.name}] ${what}${!ok && detail ? `\n       ${detail}` : ''}`);
  }

  /** @param {string} what @param {string} why */
  skip(what, why) {
    console.log(`SKIP [${this.name}] ${what}: ${why}`);
  }

  /** Guest lines with a prefix, prefix removed. @param {string} prefix */
  guest(prefix) {
    return this.serial.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length).trim());
  }
}

/** Parses `k=v` words. @param {string} line */
function kv(line) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const m of line.matchAll(/(\w+)=(\S*)/g)) out[m[1]] = m[2];
  return out;
}

/** The guest's E2E-PCI lines as records (bdf, vendor, device, ...). @param {Run} r @returns {Record<string, string>[]} */
function guestPci(r) {
  return r.guest('E2E-PCI:').map((l) => ({ ...kv(l), bdf: l.split(' ')[0] }));
}

/** Index of the first device log line matching re at or after `from`. @param {string[]} lines @param {RegExp} re */
function findFrom(lines, re, from = 0) {
  for (let i = from; i < lines.length; i++) if (re.test(lines[i])) return i;
  return -1;
}

// ------------------------------------------------------------------ checks

/** Common: the guest saw the function with the right ids and BARs. @param {Run} r @param {string} vendor @param {string} device @param {string[]} bars */
function checkEnumeration(r, vendor, device, bars) {
  const pci = guestPci(r);
  const mine = pci.find((p) => p.vendor === vendor && p.device === device);
  r.assert(mine !== undefined, `guest enumerates ${vendor.slice(2)}:${device.slice(2)}`, `guest saw: ${pci.map((p) => `${p.vendor}:${p.device}`).join(' ') || 'nothing'}`);
  if (!mine) return undefined;
  const seen = r.guest('E2E-BAR:').filter((l) => l.startsWith(mine.bdf + ' ')).map((l) => l.slice(mine.bdf.length + 1));
  const norm = (/** @type {string} */ s) => s.replace(/ (prefetch|64bit)/g, '');
  r.assert(JSON.stringify(seen.map(norm)) === JSON.stringify(bars), `guest sees BARs ${bars.join(', ')}`, `guest saw: ${seen.join(', ') || 'none'}`);
  return mine.bdf;
}

/** @param {Run} r */
function checkGpio(r) {
  const bdf = checkEnumeration(r, '0x494f', '0x0dc8', ['bar=2 kind=io size=256']);
  const g = r.guest('E2E-GPIO:');
  const head = kv(g.find((l) => l.startsWith('device=')) ?? '');
  r.assert(head.driver === 'pci-idio-16', 'gpio-pci-idio-16 binds to the device', `driver=${head.driver}; ${g.join(' | ')}`);
  const chip = kv(g.find((l) => l.startsWith('chip=')) ?? '');
  r.assert(chip.ngpio === '32' && chip.label === bdf, 'the driver registers a 32-line gpiochip for it', `chip: ${JSON.stringify(chip)}`);

  // outputs: guest writes, device latches, in that order
  const d = r.device;
  const a = findFrom(d, /^gpio: out=0x0001 /);
  const b = findFrom(d, /^gpio: out=0x0201 /, Math.max(a, 0));
  const c = findFrom(d, /^gpio: out=0x0200 /, Math.max(b, 0));
  r.assert(a >= 0 && b > a && c > b, 'guest output writes reach the device latches: OUT0=1 -> out=0x0001, OUT9=1 -> 0x0201, OUT0=0 -> 0x0200', `device out= lines: ${d.filter((l) => l.startsWith('gpio: out=')).join(' | ')}`);
  const wr = findFrom(d, /^gpio: write reg=0x0 name=out0_7 val=0x01$/) >= 0 && findFrom(d, /^gpio: write reg=0x4 name=out8_15 val=0x02$/) >= 0;
  r.assert(wr, 'device logs each register access (-v): writes of out0_7 and out8_15', '');
  // inputs: device changes, guest reads; the edge interrupt reaches the guest's consumer
  for (const [round, want, v0, v15, edge] of /** @type {const} */ ([[1, '0x8001', '1', '1', 'rising'], [2, '0x0000', '0', '0', 'falling']])) {
    const line = g.find((l) => l.startsWith(`round=${round} `));
    const k = kv(line ?? '');
    r.assert(k.IIN0 === v0 && k.IIN1 === '0' && k.IIN15 === v15, `round ${round}: input ${want} set by the device is read by the guest (IIN0=${v0} IIN1=0 IIN15=${v15})`, line ?? 'no such guest line (did it time out?)');
    const irq = kv(r.guest('E2E-IRQ:').find((l) => l.startsWith(`round=${round} `)) ?? '');
    r.assert(Number(irq.after) > Number(irq.before) && k.event === edge,
      `round ${round}: the interrupt is delivered (INTx ${irq.intx}: ${irq.before} -> ${irq.after}; ${k.event} edge event on IIN0)`, `${JSON.stringify(irq)} event=${k.event}`);
  }
  const ev = r.guest('E2E-GPIOEV:');
  r.assert(ev.includes('exit=0') && ev.filter((l) => l.startsWith('event ')).length === 2, 'the guest got exactly the two edge events it waited for', ev.join(' | '));
  const en = findFrom(d, /^gpio: irq enabled$/);
  const sent = findFrom(d, /^gpio: in=0x8001 was=0x0000 irq=sent$/, Math.max(en, 0));
  const cleared = findFrom(d, /^gpio: irq cleared /, Math.max(sent, 0));
  r.assert(en >= 0 && sent > en && cleared > sent, 'device: guest enables the IRQ, input change raises INTx (sent), guest clears the status', d.filter((l) => /irq/.test(l)).join(' | '));
  const rd = findFrom(d, /^gpio: read reg=0x1 name=in0_7 val=0x01$/) >= 0 && findFrom(d, /^gpio: read reg=0x5 name=in8_15 val=0x80$/) >= 0 && findFrom(d, /^gpio: read reg=0x6 name=irq_status val=0x07$/) >= 0;
  r.assert(rd, 'device logs the guest reading in0_7=0x01, in8_15=0x80 and irq_status=0x07', '');
}

/** @param {Run} r @param {{ selftestVia: string }} o */
function checkDma(r, o) {
  const dm = r.guest('E2E-DMA:');
  const rd = kv(dm.find((l) => l.startsWith('read ')) ?? '');
  r.assert(rd.status === '2' && rd.device !== undefined && rd.device.length === 32 && rd.device === rd.guest,
    'device DMA-reads guest memory at 0xf0000: same 16 bytes as the guest reads from /dev/mem', JSON.stringify(rd));
  const devRead = r.device.find((l) => l.startsWith('gpio: dma read addr=0xf0000 '));
  r.assert(devRead !== undefined && / ok /.test(devRead), `device log: ${devRead ?? 'no dma read line'}`, '');
  const st = kv(dm.find((l) => l.startsWith('selftest ')) ?? '');
  const devSelf = r.device.find((l) => l.startsWith('gpio: dma selftest addr=0x40000 '));
  r.assert(st.status === '2' && devSelf !== undefined && / ok /.test(devSelf),
    'device DMA-writes a 4 KiB pattern to guest RAM and reads it back intact', `${JSON.stringify(st)} ${devSelf ?? ''}`);
  const via = kv(devSelf ?? '').via;
  r.assert(via === o.selftestVia, `guest RAM is reached ${o.selftestVia === 'direct' ? 'through the mapped memfd (zero copy)' : 'by DMA_WRITE/DMA_READ messages (no fd)'}: via=${via}`, devSelf ?? '');
}

/** @param {Run} r */
function checkBench(r) {
  checkEnumeration(r, '0x4d55', '0x0001', ['bar=0 kind=mem size=4096', 'bar=1 kind=mem size=4096', 'bar=2 kind=mem size=4096']);
  const b = r.guest('E2E-BENCH:');
  const w = b.find((l) => l.startsWith('bar0 write 0x10='));
  r.assert(w !== undefined && w.endsWith('readback=deadbeef0badf00d'), 'guest writes BAR 0 through resource0 and reads the same 8 bytes back', w ?? 'no line');
  const w8 = b.find((l) => l.startsWith('bar0 write 0x7='));
  r.assert(w8 !== undefined && w8.endsWith('readback=a5'), 'a single byte round-trips too', w8 ?? 'no line');
  const f = b.find((l) => l.startsWith('bar0 fill '));
  r.assert(f !== undefined && f.endsWith('check=ok 4096 bytes'), 'guest fills all 4 KiB of BAR 0 and reads it back intact', f ?? 'no line');
  const seen = /** @type {string | undefined} */ (r.extra.benchMemory ?? r.extra.afterQemu);
  r.assert(seen === 'ok', "the device's own BAR 0 memory holds what the guest wrote (read by a muser client after QEMU left)", String(seen));

  // REGION_WRITE_MULTI: the posted-write device, stopped while the guest wrote
  checkEnumeration(r, '0x4d55', '0x0e2e', ['bar=0 kind=mem size=4096']);
  const multi = r.trace.filter((l) => /^vfio_user_wrmulti .*flush/.test(l)).length;
  const adds = r.trace.filter((l) => /^vfio_user_wrmulti .*add/.test(l)).length;
  r.assert(multi > 0, `QEMU coalesced ${adds} posted writes into ${multi} REGION_WRITE_MULTI messages`, `${r.trace.filter((l) => /wrmulti/.test(l)).length} wrmulti trace lines`);
  const p = kv(r.guest('E2E-POSTED:').find((l) => l.startsWith('writes=')) ?? '');
  r.assert(p.writes !== undefined && p.count === p.writes && p.inorder === '1' && Number(p.last) === 1000 + Number(p.writes) - 1,
    `the device applied all ${p.writes} posted writes, in order (count=${p.count}, last=${p.last})`, JSON.stringify(p));
}

/** Reads back what the guest left in bench's BAR 0, through a muser client. @param {Run} r */
async function benchMemoryAfter(r) {
  const { Client } = await import(join(REPO, 'dist/src/client/index.js'));
  const c = await Client.connect(r.sock);
  try {
    const data = await c.regionRead(0, 0, 4096);
    let bad = -1;
    for (let i = 0; i < 4096; i++) if (data[i] !== ((i * 31 + 7) & 0xff)) { bad = i; break; }
    r.extra.benchMemory = bad < 0 ? 'ok' : `differs at byte ${bad}: 0x${data[bad].toString(16)}`;
  } finally {
    c.close();
  }
}

// -------------------------------------------- lspci vs what the guest sees

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
async function checkTrace(r, tracer) {
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

/** Runs a muser CLI command; resolves with its exit code and output. @param {string[]} args */
function muser(args) {
  return /** @type {Promise<{ code: number, out: string, err: string }>} */ (new Promise((res) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b) => (out += b));
    p.stderr.on('data', (b) => (err += b));
    p.on('close', (code) => res({ code: code ?? -1, out, err }));
  }));
}

/** `muser lspci SOCK` and `muser lspci --json SOCK`, before QEMU connects. @param {Run} r */
async function runLspci(r) {
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
function checkLspci(r, vendor, device) {
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

// ------------------------------------------------------------------ running

/**
 * Starts a device process; its output lines go to `lines` and NAME.log.
 * @param {Run} r @param {string} name @param {string[]} argv @param {string} sock @param {string[]} lines
 */
async function startProcess(r, name, argv, sock, lines) {
  const log = createWriteStream(join(r.dir, `${name}.log`));
  const p = spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  for (const s of [p.stdout, p.stderr]) {
    createInterface({ input: s }).on('line', (l) => {
      lines.push(l);
      log.write(l + '\n');
    });
  }
  for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((res) => setTimeout(res, 50));
  if (!existsSync(sock)) throw new Error(`${name} never listened on ${sock}: ${lines.join(' | ')}`);
  return p;
}

/** @param {import('node:child_process').ChildProcess} p */
async function stopProcess(p) {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const closed = new Promise((res) => p.on('close', res));
  p.kill('SIGCONT');
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
  await closed;
  clearTimeout(timer);
}

/**
 * @typedef {{ tests?: string, qemuArgs?: string[], smp?: number, label?: string,
 *   onRequest?: (verb: string, arg: string | undefined) => boolean }} BootOptions
 * tests: guest scripts (default: the scenario's); qemuArgs: extra QEMU
 * arguments (e.g. QEMU's own devices); smp: vCPUs; label: suffix of the log
 * files, for scenarios that boot more than once; onRequest: answers guest
 * requests the harness does not know (true when handled).
 */

/**
 * Boots the guest against every device; answers its E2E-REQ lines.
 * @param {Run} r @param {Map<string, { proc: import('node:child_process').ChildProcessWithoutNullStreams, sock: string }>} devs
 * @param {BootOptions} [o]
 */
function bootGuest(r, devs, o = {}) {
  const initrd = process.env.E2E_INITRD;
  if (!initrd) throw new Error('E2E_INITRD is not set (run through e2e/run.sh)');
  const kernel = join(process.env.E2E_CACHE ?? '/var/cache/muser-e2e', 'kernel/vmlinuz');
  const mem = r.sc.sharedRam
    ? ['-machine', 'q35,memory-backend=mem', '-object', 'memory-backend-memfd,id=mem,size=512M,share=on']
    : ['-machine', 'q35'];
  const args = [
    '-accel', 'tcg', '-cpu', 'max', '-m', '512M', ...(o.smp ? ['-smp', String(o.smp)] : []), ...mem,
    '-nodefaults', '-no-user-config', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', kernel, '-initrd', initrd,
    '-append', `console=ttyS0 panic=-1 loglevel=4 e2e.test=${o.tests ?? r.sc.tests}`,
    '-trace', 'vfio_user*',
    ...(o.qemuArgs ?? []),
  ];
  for (const d of devs.values()) args.push('-device', JSON.stringify({ driver: 'vfio-user-pci', socket: { path: d.sock, type: 'unix' } }));
  const label = o.label ? `-${o.label}` : '';
  writeFileSync(join(r.dir, `qemu-args${label}.txt`), args.map((a) => `'${a}'`).join(' ') + '\n');
  const script = `. "${join(HERE, 'lib.sh')}"; qemu_run "$@"`;
  const q = spawn('bash', ['-c', script, 'qemu', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
  const serialLog = createWriteStream(join(r.dir, `serial${label}.log`));
  const qemuLog = createWriteStream(join(r.dir, `qemu${label}.log`));
  const primary = devs.get(r.sc.sample)?.proc;
  createInterface({ input: q.stdout }).on('line', (raw) => {
    const l = raw.replace(/\r$/, '');
    r.serial.push(l);
    serialLog.write(l + '\n');
    const m = /^E2E-REQ: (\S+)(?: (\S+))?/.exec(l);
    if (!m) return;
    const target = devs.get(m[2] ?? '')?.proc;
    if (m[1] === 'input' && primary) primary.stdin.write(`input ${m[2]}\n`);
    else if (m[1] === 'stop' && target) target.kill('SIGSTOP');
    else if (m[1] === 'continue' && target) target.kill('SIGCONT');
    else if (o.onRequest?.(m[1], m[2])) return;
    else r.qemuErrors.push(`harness: unknown request '${l}'`);
  });
  createInterface({ input: q.stderr }).on('line', (l) => {
    qemuLog.write(l + '\n');
    if (/^vfio_user/.test(l) || /^\d+@\d+\.\d+:vfio_user/.test(l)) r.trace.push(l.replace(/^\d+@[\d.]+:/, ''));
    else r.qemuErrors.push(l);
  });
  const timeoutS = Number(process.env.E2E_BOOT_TIMEOUT ?? 150);
  return new Promise((res) => {
    const timer = setTimeout(() => {
      r.qemuErrors.push(`timeout after ${timeoutS} s`);
      q.kill('SIGKILL');
    }, timeoutS * 1000);
    q.on('close', (code) => {
      clearTimeout(timer);
      for (const d of devs.values()) d.proc.kill('SIGCONT');
      r.qemuExit = code;
      res(code);
    });
  });
}

async function main() {
  const name = process.argv[2] ?? '';
  const sc = SCENARIOS[name];
  if (!sc) {
    console.error(`usage: scenario.mjs ${Object.keys(SCENARIOS).join('|')}`);
    process.exit(2);
  }
  const r = new Run(name, sc);
  const t0 = Date.now();
  console.log(`---- scenario ${name}: ${sc.what} (logs: ${r.dir})`);
  if (sc.flow) return runFlow(r, sc.flow, t0);
  /** @type {Map<string, { proc: import('node:child_process').ChildProcessWithoutNullStreams, sock: string }>} */
  const devs = new Map();
  /** @type {import('node:child_process').ChildProcessWithoutNullStreams | undefined} */
  let tracer;
  try {
    devs.set(sc.sample, { proc: await startProcess(r, 'device', [CLI, 'run', sc.sample, r.sock, '-v'], r.sock, r.device), sock: r.sock });
    for (const x of sc.extraDevices ?? []) {
      const sock = join(r.dir, `${x}.sock`);
      r.extraLogs[x] = [];
      devs.set(x, { proc: await startProcess(r, x, [join(HERE, 'devices', `${x}.mjs`), sock], sock, r.extraLogs[x]), sock });
    }
    // QEMU talks to the device through `muser trace` (traced scenarios).
    if (sc.traced) {
      const sock = join(r.dir, 'trace.sock');
      r.extraLogs.trace = [];
      tracer = await startProcess(r, 'trace', [CLI, 'trace', r.sock, '--listen', sock, '--json', '--stats'], sock, r.extraLogs.trace);
      devs.set(sc.sample, { ...devs.get(sc.sample), sock });
    }
    // Only one client at a time: ask the device what it is before QEMU connects.
    await runLspci(r);
    await new Promise((res) => setTimeout(res, 200));
    const code = await bootGuest(r, devs);
    await new Promise((res) => setTimeout(res, 300));
    if (sc.whileRunning) {
      try {
        await sc.whileRunning(r);
      } catch (e) {
        r.extra.afterQemu = `client failed: ${/** @type {Error} */ (e).message}`;
      }
    }
    const done = r.guest('E2E: done').at(-1);
    r.assert(code === 0 && done !== undefined, `guest booted, ran its tests and powered off (${((Date.now() - t0) / 1000).toFixed(1)} s)`, `qemu exit ${code}; last serial lines:\n       ${r.serial.slice(-15).join('\n       ')}`);
    const failures = r.serial.filter((l) => / FAIL /.test(l) || /^E2E: \S+ exit=[1-9]/.test(l));
    r.assert(failures.length === 0, 'guest test scripts report no failure', failures.join(' | '));
    sc.check(r);
    if (tracer) await checkTrace(r, tracer);
    const vendor = sc.sample === 'gpio' ? 0x494f : 0x4d55;
    const device = sc.sample === 'gpio' ? 0x0dc8 : 0x0001;
    checkLspci(r, vendor, device);
    const qerr = r.qemuErrors.filter((l) => !/Could not enable error recovery/.test(l));
    r.assert(qerr.length === 0, 'QEMU reported no error about the device', qerr.slice(0, 10).join('\n       '));
    const logs = [...r.device, ...Object.values(r.extraLogs).flat()];
    const derr = logs.filter((l) => /\] (warn|error): /.test(l) || /refused/.test(l));
    r.assert(derr.length === 0, 'the devices logged no warning, error or refused command', derr.slice(0, 10).join('\n       '));
  } catch (e) {
    r.assert(false, 'scenario ran to the end', /** @type {Error} */ (e).stack ?? String(e));
  } finally {
    for (const d of devs.values()) await stopProcess(d.proc);
    if (tracer) await stopProcess(tracer);
  }
  console.log(`---- scenario ${name}: ${r.passed} passed, ${r.failed} failed (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  process.exit(r.failed > 0 ? 1 : 0);
}

/**
 * What a scenario's flow gets to drive devices and the guest.
 * @typedef {{ bootGuest: typeof bootGuest, startProcess: typeof startProcess, stopProcess: typeof stopProcess,
 *   kv: typeof kv, cli: string }} Harness
 */

/** Runs a scenario's own flow; exits like main(). @param {Run} r @param {(r: Run, h: Harness) => Promise<void>} flow @param {number} t0 */
async function runFlow(r, flow, t0) {
  try {
    await flow(r, { bootGuest, startProcess, stopProcess, kv, cli: CLI });
  } catch (e) {
    r.assert(false, 'scenario ran to the end', /** @type {Error} */ (e).stack ?? String(e));
  }
  console.log(`---- scenario ${r.name}: ${r.passed} passed, ${r.failed} failed (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  process.exit(r.failed > 0 ? 1 : 0);
}

await main();
