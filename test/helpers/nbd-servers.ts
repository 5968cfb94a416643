/**
 * Real NBD servers (nbdkit, qemu-nbd) in child processes for the NBD tests:
 * start on a UNIX socket or TCP on 127.0.0.1, wait until they accept, kill
 * with SIGKILL and start again on the same address.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';

/** True if `bin` runs (`--version`). */
export function haveBinary(bin: string): boolean {
  const r = spawnSync(bin, ['--version'], { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
}

export const HAVE_NBDKIT = haveBinary('nbdkit');
export const HAVE_QEMU_NBD = haveBinary('qemu-nbd') && haveBinary('qemu-img');
/** For `test(..., { skip })`: false, or why the test cannot run here. */
export const SKIP_NBDKIT = HAVE_NBDKIT ? false : 'nbdkit is not installed (apt-get install nbdkit)';
export const SKIP_QEMU_NBD = HAVE_QEMU_NBD ? false : 'qemu-nbd/qemu-img are not installed (apt-get install qemu-utils)';

/** Where a server listens. */
export type Listen = { unix: string } | { tcp: true };

/** A running server that can be killed and started again on the same address. */
export class NbdServerProcess {
  private child: ChildProcess | undefined;
  private stderr = '';

  private constructor(
    private readonly bin: string,
    private readonly args: string[],
    readonly uri: string,
    private readonly probe: { path: string } | { host: string; port: number },
  ) {}

  /**
   * nbdkit: `plugin` is the plugin and its parameters, `filters` go first
   * as --filter=NAME, `params` (filter parameters) after the plugin, `extra`
   * (server options) before it. Foreground, ends with its parent, many threads.
   */
  static async nbdkit(listen: Listen, plugin: string[], options: { filters?: string[]; readOnly?: boolean; extra?: string[]; params?: string[] } = {}): Promise<NbdServerProcess> {
    const where = await address(listen);
    const args = ['-f', '--exit-with-parent', ...where.args, ...(options.readOnly ? ['-r'] : []), ...(options.extra ?? [])];
    for (const f of options.filters ?? []) args.push(`--filter=${f}`);
    args.push(...plugin, ...(options.params ?? []));
    const s = new NbdServerProcess('nbdkit', args, where.uri(''), where.probe);
    await s.start();
    return s;
  }

  /** qemu-nbd serving `image` (format `format`) as export `exportName`, discard passed down. */
  static async qemuNbd(listen: Listen, image: string, format: string, exportName = ''): Promise<NbdServerProcess> {
    const where = await address(listen, true);
    const args = [...where.args, '-f', format, '-t', '-e', '8', '--discard=unmap', '-x', exportName, image];
    const s = new NbdServerProcess('qemu-nbd', args, where.uri(exportName), where.probe);
    await s.start();
    return s;
  }

  /** The URI of another export on the same server. */
  uriFor(exportName: string): string {
    return this.uri.replace(/(nbd:\/\/[^/]+\/|nbd\+unix:\/\/\/)[^?]*/, `$1${encodeURIComponent(exportName)}`);
  }

  /** Starts the server and waits until it accepts connections. */
  async start(): Promise<void> {
    if ('path' in this.probe) rmSync(this.probe.path, { force: true });
    this.stderr = '';
    const child = spawn(this.bin, this.args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr?.on('data', (b: Buffer) => (this.stderr += b.toString()));
    this.child = child;
    const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`${this.bin} exited (${code}): ${this.stderr}`))));
    exited.catch(() => {});
    for (let i = 0; i < 500; i++) {
      if (await Promise.race([accepts(this.probe), exited])) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`${this.bin} did not start listening: ${this.stderr}`);
  }

  /** SIGKILL: the server vanishes without a goodbye, as in a crash. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
  }

  /** Kills the server (if running) and starts it again on the same address. */
  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  /** Stops the server for good. */
  async stop(): Promise<void> {
    await this.kill();
    if ('path' in this.probe) rmSync(this.probe.path, { force: true });
  }
}

/** Command-line options, URI and probe target for a listening address. */
async function address(listen: Listen, qemu = false) {
  if ('unix' in listen) {
    const path = listen.unix;
    return {
      args: qemu ? ['-k', path] : ['-U', path],
      uri: (name: string) => `nbd+unix:///${encodeURIComponent(name)}?socket=${path}`,
      probe: { path },
    };
  }
  const port = await freePort();
  return {
    args: qemu ? ['-b', '127.0.0.1', '-p', String(port)] : ['-i', '127.0.0.1', '-p', String(port)],
    uri: (name: string) => `nbd://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    probe: { host: '127.0.0.1', port },
  };
}

/** A TCP port nobody listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** True once a connection is accepted (then closed at once). */
function accepts(target: { path: string } | { host: string; port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(target as never);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
