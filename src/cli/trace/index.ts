/**
 * `muser trace <device-socket> --listen <socket>`: a transparent proxy that
 * prints every vfio-user message passing through it, decoded.
 *
 *   --filter a,b     only these commands (`region_read,region_write`; the
 *                    names of src/protocol's Command, lower case)
 *   --region n,m     only messages about these regions
 *   --json           one JSON object per message (JSON lines)
 *   --stats          at exit, per-command counts and reply latency percentiles,
 *                    and region accesses per place (region, offset, width,
 *                    direction: count, errors, values read), of every
 *                    message, filtered or not
 *   --data-bytes N   data bytes shown per message (default 32)
 *
 * Runs until SIGINT, SIGTERM or SIGHUP; then removes its socket.
 */
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { UsageError } from '../usage.js';
import { COMMAND_NAMES, regionOf, type TraceEvent } from './decode.js';
import { TraceProxy } from './proxy.js';
import { TraceStats } from './stats.js';
import { AccessStats } from './access-stats.js';

export { TraceProxy, type TraceProxyOptions } from './proxy.js';
export { decodeMessage, commandName, COMMAND_NAMES, type TraceEvent, type Direction, type FieldValue } from './decode.js';
export { TraceStats, type CommandStats } from './stats.js';
export { AccessStats, type AccessSummary, type PlaceStats } from './access-stats.js';

/** Which events to print. */
export interface TraceFilter {
  commands?: ReadonlySet<string>;
  regions?: ReadonlySet<number>;
}

/** Runs the trace command; resolves once a signal stopped it. */
export async function trace(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        listen: { type: 'string', short: 'l' },
        filter: { type: 'string' },
        region: { type: 'string' },
        json: { type: 'boolean' },
        stats: { type: 'boolean' },
        'data-bytes': { type: 'string' },
        verbose: { type: 'boolean', short: 'v' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { positionals, values } = parsed;
  const device = positionals[0];
  if (!device || positionals.length > 1 || !values.listen) throw new UsageError('trace needs a device socket and --listen <socket>');
  const filter = parseFilter(values.filter, values.region);
  const dataBytes = values['data-bytes'] === undefined ? 32 : Number(values['data-bytes']);
  if (!Number.isInteger(dataBytes) || dataBytes < 0) throw new UsageError('--data-bytes wants a count of bytes');
  const json = values.json === true;
  const stats = values.stats ? new TraceStats() : undefined;
  const accesses = values.stats ? new AccessStats() : undefined;
  const shown = new Set<string>();
  const onEvent = (e: TraceEvent): void => {
    stats?.add(e);
    accesses?.add(e);
    if (!passes(e, filter, shown)) return;
    process.stdout.write(json ? `${JSON.stringify(e)}\n` : `${formatEvent(e)}\n`);
  };

  let stopRequested!: () => void;
  const stopped = new Promise<void>((resolve) => (stopRequested = resolve));
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, () => stopRequested());
  const proxy = new TraceProxy(device, values.listen, onEvent, {
    dataBytes,
    onConnection(conn, what, detail) {
      const text = what === 'open' ? 'client connected' : what === 'close' ? 'connection closed' : `error: ${detail}`;
      if (json) process.stdout.write(`${JSON.stringify({ conn, event: what, ...(detail ? { detail } : {}) })}\n`);
      else process.stdout.write(`# [${conn}] ${text}\n`);
    },
  });
  if (!existsSync(device)) process.stderr.write(`muser: warning: ${device} does not exist yet; clients will be turned away until it does\n`);
  process.stderr.write(`muser: tracing ${device} on ${values.listen}\n`);
  await stopped;
  proxy.close();
  if (stats && accesses) {
    if (json) process.stdout.write(`${JSON.stringify({ stats: stats.summary(), accesses: accesses.summary() })}\n`);
    else process.stdout.write(`${stats.format()}\n${accesses.format()}`);
  }
}

function parseFilter(commands: string | undefined, regions: string | undefined): TraceFilter {
  const filter: TraceFilter = {};
  if (commands !== undefined) {
    const names = commands.split(',').map((c) => c.trim().toLowerCase()).filter(Boolean);
    for (const n of names) if (!COMMAND_NAMES.includes(n)) throw new UsageError(`--filter: unknown command '${n}' (known: ${COMMAND_NAMES.join(', ')})`);
    filter.commands = new Set(names);
  }
  if (regions !== undefined) {
    const list = regions.split(',').map((r) => Number(r.trim()));
    if (list.some((r) => !Number.isInteger(r) || r < 0)) throw new UsageError('--region wants region indexes, e.g. --region 0,2');
    filter.regions = new Set(list);
  }
  return filter;
}

/**
 * True when `e` is to be printed. A reply is printed when its request was
 * (a region filter sees the region in the request).
 */
export function passes(e: TraceEvent, filter: TraceFilter, shown: Set<string>): boolean {
  if (filter.commands && !filter.commands.has(e.command)) return false;
  if (!filter.regions) return true;
  const requestDir = e.type === 'request' ? e.dir : e.dir === 'c>s' ? 's>c' : 'c>s';
  const key = `${e.conn}:${requestDir}:${e.msgId}`;
  if (e.type === 'reply') return shown.delete(key);
  const region = regionOf(e);
  if (region === undefined || !filter.regions.has(region)) return false;
  if (!e.noReply) shown.add(key);
  return true;
}

/** One event as a line of text. */
export function formatEvent(e: TraceEvent): string {
  const parts = [e.t.toFixed(6).padStart(12), `[${e.conn ?? 0}]`, e.dir, `#${e.msgId}`, e.command];
  if (e.type === 'reply') parts.push('reply');
  if (e.latencyUs !== undefined) parts.push(`${e.latencyUs}us`);
  if (e.errno !== undefined) parts.push(`ERROR ${e.errnoName}(${e.errno})`);
  if (e.noReply) parts.push('(posted)');
  for (const [k, v] of Object.entries(e.fields)) if (k !== 'argsz' && !k.endsWith('.argsz')) parts.push(`${k}=${v}`);
  if (e.fds > 0) parts.push(`fds=${e.fds}`);
  if (e.undecodable) parts.push(`UNDECODABLE: ${e.undecodable}`);
  return parts.join(' ');
}
