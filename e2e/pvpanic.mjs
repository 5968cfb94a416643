// @ts-check
/**
 * e2e/pvpanic.mjs - a device written in Python under QEMU: `muser run
 * python/examples/pvpanic.py SOCK -v` (QEMU's pvpanic-pci, 1b36:0011, in
 * Python), driven by the guest kernel's own pvpanic-pci driver. The guest
 * checks the driver bound and reads what it found, then panics (echo c >
 * /proc/sysrq-trigger); the driver's panic notifier writes PANICKED to the
 * device, which logs "guest panicked". The kernel reboots on panic
 * (panic=-1) and QEMU exits (-no-reboot): the guest never reaches
 * "E2E: done", by design.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PVPANIC = join(REPO, 'python/examples/pvpanic.py');

/**
 * @typedef {import('./harness.mjs').Harness} Harness
 * @typedef {any} Run
 */

/** The scenario, keyed by name, in the shape scenario.mjs runs. */
export function pvpanicScenarios() {
  return {
    pvpanic: {
      what: 'pvpanic-pci written in Python (python/examples/pvpanic.py): Linux pvpanic-pci binds, the guest panics, the device logs it',
      sample: 'pvpanic',
      tests: 'pvpanic',
      sharedRam: true,
      check: () => {},
      flow: pvpanicFlow,
    },
  };
}

/** @param {Run} r @param {Harness} h */
async function pvpanicFlow(r, h) {
  const sock = join(r.dir, 'pvpanic.sock');
  const dev = await h.startProcess(r, 'device', [h.cli, 'run', PVPANIC, sock, '-v'], sock, r.device);
  try {
    const t0 = Date.now();
    const code = await h.bootGuest(r, new Map([['pvpanic', { proc: dev, sock }]]), { label: 'boot' });
    // The panic's write reached muser just before QEMU left: give the log a moment.
    for (let i = 0; i < 40 && !r.device.some((l) => l.includes('guest panicked')); i++) await new Promise((res) => setTimeout(res, 50));

    const pci = r.guest('E2E-PCI:').map((l) => ({ ...h.kv(l), bdf: l.split(' ')[0] }));
    const mine = pci.find((p) => p.vendor === '0x1b36' && p.device === '0x0011');
    r.assert(mine !== undefined, 'the guest enumerates 1b36:0011', `guest saw: ${pci.map((p) => `${p.vendor}:${p.device}`).join(' ')}`);
    const bars = r.guest('E2E-BAR:').filter((l) => mine && l.startsWith(`${mine.bdf} `));
    r.assert(bars.length === 1 && / bar=0 kind=mem size=16/.test(` ${bars[0].slice(mine?.bdf.length ?? 0)}`), 'with one 16-byte memory BAR', bars.join(' | '));
    const mod = r.guest('E2E-MOD:').filter((l) => /pvpanic/.test(l));
    r.assert(mod.length === 2 && mod.every((l) => l.startsWith('loaded ')), 'the guest loads pvpanic and pvpanic-pci', mod.join(' | '));
    const g = h.kv(r.guest('E2E-PVPANIC:').find((l) => l.startsWith('bdf=')) ?? '');
    r.assert(g.driver === 'pvpanic-pci' && g.bdf === mine?.bdf, `Linux's pvpanic-pci driver binds to it (${g.bdf})`, JSON.stringify(g));
    r.assert(g.capability === '3' && g.events === '3', 'the driver read the events the device supports: PANICKED | CRASH_LOADED (sysfs capability and events)', JSON.stringify(g));
    const probe = r.device.findIndex((l) => /\[pvpanic\] debug: read reg=0x0 name=events val=0x03$/.test(l));
    r.assert(probe >= 0, 'the device logs the probe reading its events register (0x03)', '');
    const panic = r.serial.find((l) => /Kernel panic - not syncing: sysrq triggered crash/.test(l));
    r.assert(panic !== undefined, 'echo c > /proc/sysrq-trigger panics the guest', r.serial.slice(-10).join('\n       '));
    const wrote = r.device.findIndex((l) => /\[pvpanic\] debug: write reg=0x0 name=events val=0x01$/.test(l));
    const said = r.device.findIndex((l) => /\[pvpanic\] info: guest panicked$/.test(l));
    r.assert(wrote > probe && said > wrote, 'the panic notifier writes PANICKED to the device, and the device logs "guest panicked"', r.device.slice(-8).join('\n       '));
    r.assert(code === 0 && !r.serial.some((l) => l.startsWith('E2E: done')), `QEMU exits as the panicked guest reboots (-no-reboot), exit ${code} (${((Date.now() - t0) / 1000).toFixed(1)} s)`, `qemu exit ${code}`);
    const qerr = r.qemuErrors.filter((l) => !/Could not enable error recovery/.test(l));
    r.assert(qerr.length === 0, 'QEMU reported no error about the device', qerr.slice(0, 10).join('\n       '));
    await h.stopProcess(dev); // what it logs while stopping counts too
    const derr = r.device.filter((l) => /\] (warn|error): /.test(l) || /refused|Traceback/.test(l));
    r.assert(derr.length === 0, 'muser and the Python program logged no warning, error or traceback', derr.slice(0, 10).join('\n       '));
  } finally {
    await h.stopProcess(dev);
  }
}
