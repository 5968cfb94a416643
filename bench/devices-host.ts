/**
 * Bench helper: serves N bench devices on N sockets in one process, for the
 * "N devices in one process" measurement of `npm run bench`.
 *
 *   node --expose-gc dist/bench/devices-host.js N DIR
 *
 * serves dev-0.sock .. dev-(N-1).sock in DIR. Talks to its parent by lines:
 * on stdout, one JSON object per line:
 *   {"event":"baseline","pid":P,"rss_kb":K}  modules loaded, no device yet
 *   {"event":"ready","rss_kb":K,"sockets":[...]}  N devices listening
 *   {"event":"rss","rss_kb":K}                 answer to "rss" on stdin
 * RSS is VmRSS from /proc/self/status, read after a full GC when the
 * process runs with --expose-gc. EOF on stdin (or SIGTERM) closes every
 * device and exits 0.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { benchDevice } from '../src/samples/bench.js';
import { Server } from '../src/server/server.js';

function rssKb(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('no VmRSS in /proc/self/status');
  return Number(m[1]);
}

function say(o: object): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const n = Number(process.argv[2]);
  const dir = process.argv[3];
  if (!Number.isInteger(n) || n < 0 || !dir) {
    process.stderr.write('usage: devices-host N DIR\n');
    process.exit(2);
  }
  await sleep(50);
  say({ event: 'baseline', pid: process.pid, rss_kb: rssKb() });

  const servers: Server[] = [];
  const sockets: string[] = [];
  for (let i = 0; i < n; i++) {
    const path = join(dir, `dev-${i}.sock`);
    servers.push(new Server(benchDevice(), path, { log: 'warn' }));
    sockets.push(path);
  }
  await sleep(50);
  say({ event: 'ready', rss_kb: rssKb(), sockets });

  let done = false;
  const stop = (): void => {
    if (done) return;
    done = true;
    for (const s of servers) s.close();
    // Let the listeners and sessions wind down, then leave.
    setTimeout(() => process.exit(0), 20);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() === 'rss') say({ event: 'rss', rss_kb: rssKb() });
  });
  rl.on('close', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`devices-host: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
