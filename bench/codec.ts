/**
 * Per-message cost of the protocol codec on the hot path: the header and
 * REGION_READ / REGION_WRITE, both directions, in process, no I/O.
 *
 *   node dist/bench/codec.js                      # this checkout's codec
 *   node dist/bench/codec.js old/index.js new/index.js   # side by side
 *
 * Each argument is a path to a compiled `protocol/index.js`; several are
 * measured interleaved (round by round) so that load on the machine hits
 * them alike. The figure is the fastest round's CPU time per operation
 * (user + system, so time spent descheduled does not count), in ns.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

type Codec = typeof import('../src/protocol/index.js');

const ROUNDS = Number(process.env['CODEC_ROUNDS'] ?? 9);
const ITERATIONS = Number(process.env['CODEC_ITERATIONS'] ?? 200_000);

/** One measured operation: returns a number so the work cannot be dropped. */
type Op = () => number;

function cases(P: Codec): Array<[string, Op]> {
  const header = { msgId: 7, command: P.Command.REGION_READ, flags: P.HeaderFlag.REPLY };
  const access = { offset: 0x1000, region: P.RegionIndex.BAR0, count: 4 };
  const withData = { ...access, data: Uint8Array.of(1, 2, 3, 4) };
  const readRequest = P.encodeRegionReadRequest(access);
  const readReply = P.encodeRegionReadReply(withData);
  const writeRequest = P.encodeRegionWriteRequest(withData);
  const writeReply = P.encodeRegionWriteReply(access);
  const message = P.encodeRegionReadRequest(access, header);
  const decodedHeader = P.decodeHeader(message);
  const target = Buffer.alloc(P.HEADER_SIZE);
  return [
    ['header decode', () => P.decodeHeader(message).size],
    ['header encode', () => (P.encodeHeader(decodedHeader, target), target[4]!)],
    ['READ request encode (message)', () => P.encodeRegionReadRequest(access, header).length],
    ['READ request encode (payload)', () => P.encodeRegionReadRequest(access).length],
    ['READ request decode', () => P.decodeRegionReadRequest(readRequest).count],
    ['READ reply encode (message)', () => P.encodeRegionReadReply(withData, header).length],
    ['READ reply decode', () => P.decodeRegionReadReply(readReply).data.length],
    ['WRITE request encode (message)', () => P.encodeRegionWriteRequest(withData, header).length],
    ['WRITE request decode', () => P.decodeRegionWriteRequest(writeRequest).data.length],
    ['WRITE reply encode (message)', () => P.encodeRegionWriteReply(access, header).length],
    ['WRITE reply decode', () => P.decodeRegionWriteReply(writeReply).count],
  ];
}

/** CPU ns per call of `op` over one round. */
function round(op: Op): number {
  let sink = 0;
  const start = process.cpuUsage();
  for (let i = 0; i < ITERATIONS; i++) sink += op();
  const used = process.cpuUsage(start);
  if (sink === -1) console.log('unreachable');
  return ((used.user + used.system) * 1000) / ITERATIONS;
}

async function main(): Promise<void> {
  const paths = process.argv.slice(2);
  const urls = paths.length > 0 ? paths.map((p) => pathToFileURL(resolve(p)).href) : ['../src/protocol/index.js'];
  const codecs = await Promise.all(urls.map(async (u) => cases((await import(u)) as Codec)));
  const best = codecs.map((c) => c.map(() => Number.POSITIVE_INFINITY));
  for (const c of codecs) for (const [, op] of c) round(op); // warm up
  for (let r = 0; r < ROUNDS; r++) {
    codecs.forEach((c, i) => c.forEach(([, op], j) => (best[i]![j] = Math.min(best[i]![j]!, round(op)))));
  }
  const names = paths.length > 0 ? paths : ['ns/op'];
  console.log(['operation'.padEnd(32), ...names.map((n) => n.padStart(14))].join(' '));
  codecs[0]!.forEach(([name], j) => {
    console.log([name.padEnd(32), ...best.map((b) => b[j]!.toFixed(1).padStart(14))].join(' '));
  });
}

await main();
