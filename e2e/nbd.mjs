// @ts-check
/**
 * e2e/nbd.mjs - the NBD scenario of issue 13: the muser virtio-blk sample
 * serves an NBD export (`--nbd nbd+unix:///?socket=...`) that nbdkit's
 * file plugin serves from a raw image. Boot 1 is the guest filesystem test
 * of the virtio-blk scenario; in boot 2 the guest asks the harness to kill
 * nbdkit mid-I/O and start it again: its writes stall, then complete, and
 * nothing acknowledged is lost (checksums in the guest and in the image).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { available, bootWith, checkDisk, checkFirstBoot, diffSums, fsck, hostFile, newImage, pick, sameSums, sha256, sums } from './virtio.mjs';

/** How long nbdkit stays down in boot 2. */
const OUTAGE_MS = 2000;

/**
 * @typedef {import('./harness.mjs').Harness} Harness
 * @typedef {any} Run
 */

/** The NBD scenarios, keyed by name, in the shape scenario.mjs runs. */
export function nbdScenarios() {
  return {
    'virtio-blk-nbd': {
      what: 'virtio-blk (the muser sample) on an NBD export (nbdkit file plugin): ext2 test, then nbdkit killed and restarted mid-I/O',
      sample: 'virtio-blk',
      tests: '',
      sharedRam: true,
      check: () => {},
      flow: nbdFlow,
    },
  };
}

/** nbdkit serving `image` on `sock`, started again with the same arguments on demand. @param {string} image @param {string} sock */
function nbdkit(image, sock) {
  /** @type {import('node:child_process').ChildProcess | undefined} */
  let child;
  return {
    async start() {
      rmSync(sock, { force: true });
      child = spawn('nbdkit', ['-f', '--exit-with-parent', '-U', sock, 'file', image], { stdio: 'ignore' });
      for (let i = 0; i < 250; i++) {
        if (await accepts(sock)) return;
        await new Promise((res) => setTimeout(res, 20));
      }
      throw new Error(`nbdkit did not listen on ${sock}`);
    },
    async kill() {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise((res) => c.once('exit', res));
      c.kill('SIGKILL');
      await gone;
    },
  };
}

/** @param {string} path */
function accepts(path) {
  return new Promise((res) => {
    if (!existsSync(path)) return res(false);
    const s = connect({ path });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

/** @param {Run} r @param {Harness} h */
async function nbdFlow(r, h) {
  if (!(await available(r, 'muser', 'virtio-blk'))) return;
  if (spawnSync('nbdkit', ['--version'], { stdio: 'ignore' }).status !== 0) {
    r.skip('muser virtio-blk on NBD', 'nbdkit is not installed (apt-get install nbdkit)');
    return;
  }
  const image = newImage(r);
  const sock = join(r.dir, 'nbd.sock');
  const uri = `nbd+unix:///?socket=${sock}`;
  const server = nbdkit(image, sock);
  await server.start();
  try {
    // Boot 1: the guest filesystem test of the virtio-blk scenario, over NBD.
    const b1 = await bootWith(r, h, 'muser', { kind: 'blk', image, nbd: uri }, { tests: 'blk-format', label: 'boot1' });
    checkDisk(r, h, b1, 'boot1', { ro: '0' });
    const written = checkFirstBoot(r, h, b1, image, { label: 'boot1 (NBD)', fsckWhen: 'after boot 1 (nbdkit served it)' });

    // Boot 2: nbdkit killed on the guest's request, restarted after OUTAGE_MS.
    /** @type {{ killed?: number, restarted?: number }} */
    const outage = {};
    /** @type {Promise<void> | undefined} */
    let restarting;
    const onRequest = (/** @type {string} */ verb) => {
      if (verb !== 'nbd-restart') return false;
      restarting = (async () => {
        await server.kill();
        outage.killed = Date.now();
        await new Promise((res) => setTimeout(res, OUTAGE_MS));
        await server.start();
        outage.restarted = Date.now();
      })();
      return true;
    };
    const from = r.serial.length;
    /** @type {number | undefined} */
    let writtenAt;
    const watch = setInterval(() => {
      if (writtenAt === undefined && r.serial.slice(from).some((/** @type {string} */ l) => l.startsWith('E2E-NBD: written'))) writtenAt = Date.now();
    }, 10);
    let b2;
    try {
      b2 = await bootWith(r, h, 'muser', { kind: 'blk', image, nbd: uri }, { tests: 'blk-nbd-restart', label: 'boot2', onRequest });
    } finally {
      clearInterval(watch);
    }
    await restarting;
    checkDisk(r, h, b2, 'boot2', { ro: '0' });
    r.assert(sameSums(written, sums(h, b2, 'boot2')), 'boot2 (NBD): the files of boot 1 read back intact', diffSums(written, sums(h, b2, 'boot2')));
    const nbd = pick(b2, 'E2E-NBD:');
    const w = h.kv(nbd.find((l) => l.startsWith('written ')) ?? '');
    const re = h.kv(nbd.find((l) => l.startsWith('remount ')) ?? '');
    r.assert(outage.killed !== undefined && outage.restarted !== undefined, `the harness killed nbdkit on the guest's request and restarted it ${OUTAGE_MS} ms later`, JSON.stringify(outage));
    r.assert(writtenAt !== undefined && outage.restarted !== undefined && writtenAt >= outage.restarted,
      `the guest's O_DIRECT+fsync writes during the outage stalled until nbdkit was back, then completed (guest-side stall ${w.seconds} s, bounded by the reconnect deadline)`,
      JSON.stringify({ writtenAt, ...outage }));
    r.assert(/^[0-9a-f]{64}$/.test(w.want ?? '') && w.got === w.want && re.got === w.want,
      'no acknowledged write lost: the file written across the restart reads back intact, before and after a remount with dropped caches', JSON.stringify({ w, re }));
    r.assert(sameSums(written, sums(h, b2, 'after')), 'boot2 (NBD): the files of boot 1 are still intact after the restart', diffSums(written, sums(h, b2, 'after')));
    fsck(r, image, 'after the restart (boot 2)');
    const during = hostFile(r, image, 'during.bin');
    r.assert(during !== undefined && sha256(during) === w.want, "host: the file written across the restart is in nbdkit's image file", `${during === undefined ? 'not readable' : sha256(during)}`);
  } finally {
    await server.kill();
  }
}
