/**
 * `muser run --isolate`: each device in a child process (src/isolate).
 * Reloads: SIGUSR2 reloads every isolated device, `muser reload <socket>`
 * one (through a control socket at `<socket>.ctl`), and `--watch` a device
 * file's whenever the file changes.
 */
import { watch, type FSWatcher } from 'node:fs';
import { createServer, type Server as NetServer } from 'node:net';
import { unlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { IsolatedServer } from '../../isolate/index.js';
import { isModulePath, type RunArgs } from './args.js';
import { SAMPLES } from '../../samples/index.js';

/** The child entry module. */
const ENTRY = fileURLToPath(new URL('./isolate-child.js', import.meta.url));
/** Changes to a watched file closer together than this make one reload (editors write in several steps). */
const WATCH_DEBOUNCE_MS = 100;

/** Where `muser reload <socket>` finds the process serving `socket`. */
export function reloadSocketOf(socket: string): string {
  return `${socket}.ctl`;
}

/** Starts every device of `args` isolated; each result closes its device, control socket and watcher. */
export async function startIsolated(args: RunArgs, stopping: () => boolean): Promise<{ name: string; close(): void }[]> {
  const out: { name: string; close(): void }[] = [];
  const servers: IsolatedServer[] = [];
  const onUsr2 = (): void => {
    for (const s of servers) reportReload(s);
  };
  process.on('SIGUSR2', onUsr2);
  try {
    for (const d of args.devices) {
      if (stopping()) break;
      const refused = isModulePath(d.device) ? undefined : SAMPLES[d.device]?.notIsolated?.(d.options);
      if (refused) throw new Error(`${d.device} on ${d.socket}: ${refused}`);
      const volatile = isModulePath(d.device) ? undefined : SAMPLES[d.device]?.volatile?.(d.options);
      if (volatile) process.stderr.write(`muser: warning: ${d.device} on ${d.socket}: ${volatile}: its contents are lost whenever the child dies or is reloaded (use --image)\n`);
      const server = await IsolatedServer.start({ device: d.device, options: d.options, pollIdleMs: d.pollIdleMs }, d.socket, {
        entry: ENTRY,
        verbose: args.verbose,
        watchdogMs: args.watchdogMs,
        mode: d.mode,
      });
      servers.push(server);
      const control = listenForReload(server, reloadSocketOf(d.socket));
      const watcher = args.watch && isModulePath(d.device) ? watchFile(server, d.device) : undefined;
      out.push({
        name: server.name,
        close: () => {
          watcher?.close();
          control.close();
          server.close();
        },
      });
    }
  } catch (e) {
    for (const o of out) o.close();
    process.off('SIGUSR2', onUsr2);
    throw e;
  }
  return out;
}

/** Reloads and says how it went on stderr. */
function reportReload(server: IsolatedServer): Promise<string> {
  return server.reload().then(
    () => {
      const line = `muser: reloaded ${server.name} on ${server.path}`;
      process.stderr.write(`${line}\n`);
      return line;
    },
    (e: Error) => {
      const line = `muser: reload of ${server.name} on ${server.path} failed, the old version keeps serving: ${e.message}`;
      process.stderr.write(`${line}\n`);
      throw new Error(line);
    },
  );
}

/** A control socket: a client writes "reload\n", gets "ok ..." or "error ...". Owner-only, as the device's socket. */
function listenForReload(server: IsolatedServer, path: string): NetServer {
  try {
    unlinkSync(path);
  } catch {
    /* none left over */
  }
  const control = createServer((c) => {
    c.setEncoding('utf8');
    c.once('data', (line: string) => {
      if (line.trim() !== 'reload') return void c.end(`error unknown request ${JSON.stringify(line.trim())}\n`);
      reportReload(server).then(
        (ok) => c.end(`ok ${ok}\n`),
        (e: Error) => c.end(`error ${e.message}\n`),
      );
    });
    c.on('error', () => undefined);
  });
  // Binding a UNIX socket happens at once: the umask makes it owner-only from its first moment.
  const umask = process.umask(0o077);
  try {
    control.listen(path);
  } finally {
    process.umask(umask);
  }
  control.on('close', () => {
    try {
      unlinkSync(path);
    } catch {
      /* gone */
    }
  });
  return control;
}

/** Reloads whenever the device file changes. */
function watchFile(server: IsolatedServer, file: string): FSWatcher {
  let timer: NodeJS.Timeout | undefined;
  return watch(file, () => {
    clearTimeout(timer);
    timer = setTimeout(() => void reportReload(server).catch(() => undefined), WATCH_DEBOUNCE_MS);
  });
}

/** `muser reload <socket>`: asks the process serving `socket` isolated to reload its device; resolves with its answer. */
export function requestReload(socket: string): Promise<string> {
  return new Promise((resolve, reject) => {
    import('node:net').then(({ connect }) => {
      const c = connect(reloadSocketOf(socket));
      let answer = '';
      c.setEncoding('utf8');
      c.on('connect', () => c.write('reload\n'));
      c.on('data', (d: string) => (answer += d));
      c.on('error', (e) => reject(new Error(`no isolated muser serves ${socket} (${reloadSocketOf(socket)}: ${e.message})`)));
      c.on('end', () => (answer.startsWith('ok ') ? resolve(answer.slice(3).trim()) : reject(new Error(answer.replace(/^error /, '').trim() || 'no answer'))));
    }, reject);
  });
}
