/**
 * A kernel's modules tree: finds modules by name (`-` and `_` alike), reads
 * their dependencies from their own .modinfo (`depends=`), and unpacks them
 * (.ko, .ko.xz, .ko.zst, .ko.gz) for the initramfs. Needs no modules.dep,
 * which distribution packages leave to depmod at install time.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { VmError } from './error.js';

/** A module to load, with its contents unpacked. */
export interface GuestModule {
  /** Its name, `_` for `-` (as `lsmod` prints it). */
  name: string;
  file: string;
  data: Buffer;
}

/** `gpio-pci-idio-16` and `gpio_pci_idio_16` are the same module. */
export function canonicalModuleName(name: string): string {
  return name.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

const MODULE_FILE = /\.ko(\.(xz|zst|gz))?$/;

/** The modules of one kernel. */
export class ModuleTree {
  private files: Map<string, string> | undefined;
  private builtins: Set<string> | undefined;

  /** @param dir a /lib/modules/<version> folder or a kernel build tree */
  constructor(
    readonly dir: string,
    readonly version?: string,
  ) {}

  /** The file of module `name`, if the tree has it. */
  find(name: string): string | undefined {
    if (!this.files) {
      this.files = new Map();
      for (const rel of readdirSync(this.dir, { recursive: true, encoding: 'utf8' })) {
        if (MODULE_FILE.test(rel)) this.files.set(canonicalModuleName(basename(rel)), join(this.dir, rel));
      }
    }
    return this.files.get(canonicalModuleName(name));
  }

  /** True when modules.builtin says `name` is built into the kernel. */
  isBuiltin(name: string): boolean {
    if (!this.builtins) {
      const list = join(this.dir, 'modules.builtin');
      this.builtins = new Set(existsSync(list) ? readFileSync(list, 'utf8').split('\n').filter(Boolean).map((l) => canonicalModuleName(basename(l))) : []);
    }
    return this.builtins.has(canonicalModuleName(name));
  }

  /** Up to `max` module names that contain `name`, for "did you mean". */
  similar(name: string, max = 5): string[] {
    this.find(name);
    const want = canonicalModuleName(name);
    return [...this.files!.keys()].filter((n) => n.includes(want) || want.includes(n) && n.length > 3).sort().slice(0, max);
  }

  /**
   * `names` and everything they depend on, dependencies first, each once,
   * unpacked. Built-in modules are left out. Throws VmError naming a module
   * the kernel does not have.
   */
  resolve(names: readonly string[], why: (name: string) => string = () => ''): GuestModule[] {
    const out: GuestModule[] = [];
    const seen = new Set<string>();
    const visit = (name: string, wanted: boolean): void => {
      const canonical = canonicalModuleName(name);
      if (seen.has(canonical)) return;
      seen.add(canonical);
      const file = this.find(canonical);
      if (!file) {
        if (this.isBuiltin(canonical) || !wanted) return; // a dependency that is not a file is built in
        const like = this.similar(canonical);
        throw new VmError(
          `module ${name} does not exist in the guest kernel${this.version ? ` ${this.version}` : ''} (${this.dir})${why(name)}` +
            (like.length ? `; similar names: ${like.join(', ')}` : '; if it is built into the kernel, leave it out'),
        );
      }
      const data = unpackModule(file);
      for (const dep of modinfo(data, 'depends')?.split(',').filter(Boolean) ?? []) visit(dep, false);
      out.push({ name: canonical, file, data });
    };
    for (const n of names) visit(n, true);
    return out;
  }
}

/** A `key=value` of a module's .modinfo section (NUL-separated strings). */
export function modinfo(data: Buffer, key: string): string | undefined {
  const needle = Buffer.from(`\0${key}=`, 'latin1');
  const at = data.indexOf(needle);
  if (at < 0) return undefined;
  const start = at + needle.length;
  const end = data.indexOf(0, start);
  return data.toString('latin1', start, end < 0 ? data.length : end);
}

/** A module file's ELF contents. */
export function unpackModule(file: string): Buffer {
  if (file.endsWith('.gz')) return gunzipSync(readFileSync(file));
  const tool = file.endsWith('.xz') ? ['xz', '-dc'] : file.endsWith('.zst') ? ['zstd', '-dcq'] : undefined;
  if (!tool) return readFileSync(file);
  try {
    return execFileSync(tool[0], [...tool.slice(1), file], { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new VmError(`${tool[0]} is needed to unpack the guest kernel's modules (${basename(file)}): install ${tool[0] === 'xz' ? 'xz-utils' : 'zstd'}`);
    }
    throw new VmError(`cannot unpack ${file}: ${(e as Error).message.split('\n')[0]}`);
  }
}
