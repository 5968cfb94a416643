// @ts-check
/**
 * e2e/samples.mjs - the TypeScript samples under a real guest: `gpio`
 * (Linux gpio-pci-idio-16, INTx, the device's DMA, with guest RAM shared or
 * not) and `bench` (BAR 0 RAM through resource0, and REGION_WRITE_MULTI
 * from the harness's posted-write device).
 */
import { join } from 'node:path';
import { findFrom, guestPci, kv, REPO } from './harness.mjs';

/** @typedef {import('./harness.mjs').Run} Run */

/** The sample scenarios, keyed by name, in the shape scenario.mjs runs. */
export function sampleScenarios() {
  return {
    gpio: {
      what: 'gpio sample, Linux gpio-pci-idio-16, guest RAM shared (memfd)',
      sample: 'gpio',
      tests: 'gpio,dma',
      sharedRam: true,
      check: (/** @type {Run} */ r) => {
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
      check: (/** @type {Run} */ r) => {
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
  };
}

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
