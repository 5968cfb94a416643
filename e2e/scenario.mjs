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
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bootGuest, CLI, kv, Run, startProcess, stopProcess } from './harness.mjs';
import { sampleScenarios } from './samples.mjs';
import { checkLspci, checkTrace, runLspci } from './tools.mjs';
import { virtioScenarios } from './virtio.mjs';
import { nvmeScenarios } from './nvme.mjs';
import { nbdScenarios } from './nbd.mjs';
import { vmScenarios } from './vm.mjs';
import { pvpanicScenarios } from './pvpanic.mjs';
import { isolateScenarios } from './isolate.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * @typedef {{ sample: string, tests: string, sharedRam: boolean, what: string,
 *   check: (r: Run) => void | Promise<void>, whileRunning?: (r: Run) => Promise<void>,
 *   extraDevices?: string[], traced?: boolean, flow?: (r: Run, h: Harness) => Promise<void> }} Scenario
 * A scenario with a `flow` runs that instead of the one-device, one-boot
 * sequence of main(): it starts its own devices and boots as often as it needs.
 */

/** @type {Record<string, Scenario>} */
const SCENARIOS = {
  ...sampleScenarios(),
  ...virtioScenarios(),
  ...nvmeScenarios(),
  ...nbdScenarios(),
  ...vmScenarios(),
  ...pvpanicScenarios(),
  ...isolateScenarios(),
};

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

/** @typedef {import('./harness.mjs').Harness} Harness */

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
