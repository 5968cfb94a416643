/**
 * The guest's initramfs, written fresh for each boot into the run's private
 * folder: busybox, vm/init as /init, the kernel modules to load, and this
 * boot's settings (/muser/config) and command (/muser/cmd). Uncompressed:
 * the guest would spend longer decompressing it under TCG than QEMU spends
 * loading a few MiB more.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { readHead } from './file-head.js';
import type { GuestModule } from './modules.js';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** A `newc` cpio archive, as the kernel unpacks into its rootfs. */
export class CpioWriter {
  private readonly parts: Buffer[] = [];
  private ino = 1;

  dir(name: string, mode = 0o755): this {
    return this.entry(name, S_IFDIR | mode, Buffer.alloc(0));
  }

  file(name: string, data: Buffer | string, mode = 0o644): this {
    return this.entry(name, S_IFREG | mode, typeof data === 'string' ? Buffer.from(data) : data);
  }

  symlink(name: string, target: string): this {
    return this.entry(name, S_IFLNK | 0o777, Buffer.from(target));
  }

  /** A character device node (no root needed: it is only a header here). */
  charDevice(name: string, major: number, minor: number, mode = 0o600): this {
    return this.entry(name, S_IFCHR | mode, Buffer.alloc(0), major, minor);
  }

  /** The archive, with its trailer. */
  finish(): Buffer {
    this.entry('TRAILER!!!', 0, Buffer.alloc(0));
    return Buffer.concat(this.parts);
  }

  private entry(name: string, mode: number, data: Buffer, rdevMajor = 0, rdevMinor = 0): this {
    const nameBytes = Buffer.from(`${name}\0`);
    const fields = [this.ino++, mode, 0, 0, mode & S_IFDIR ? 2 : 1, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBytes.length, 0];
    const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`, 'latin1');
    this.parts.push(header, nameBytes, pad(header.length + nameBytes.length), data, pad(data.length));
    return this;
  }
}

function pad(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

/** True when `file` is an ELF executable without an interpreter (statically linked). */
export function isStaticElf(file: string): boolean {
  const head = readHead(file, 4096);
  if (!head) return false;
  const n = head.length;
  if (n < 64 || head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2) return false; // 64-bit ELF only
  const phoff = Number(head.readBigUInt64LE(0x20));
  const phentsize = head.readUInt16LE(0x36);
  const phnum = head.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > n) return false;
    if (head.readUInt32LE(at) === 3) return false; // PT_INTERP
  }
  return true;
}

/** What goes into one boot's initramfs. */
export interface InitramfsContents {
  busybox: string;
  /** The /init script (vm/init). */
  init: string;
  modules: readonly GuestModule[];
  /** /muser/config: shell assignments that /init sources. */
  config: string;
  /** /muser/cmd: the command of --run. */
  cmd?: string;
}

/** Writes the initramfs to `out`. */
export function writeInitramfs(out: string, c: InitramfsContents): void {
  const cpio = new CpioWriter();
  for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'root', 'etc', 'lib', 'lib/modules', 'muser', 'usr', 'usr/bin', 'usr/sbin', 'mnt']) cpio.dir(d);
  cpio.charDevice('dev/console', 5, 1).charDevice('dev/null', 1, 3, 0o666);
  cpio.file('bin/busybox', readFileSync(c.busybox), 0o755).symlink('bin/sh', 'busybox');
  cpio.file('init', readFileSync(c.init), 0o755);
  cpio.file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n').file('etc/group', 'root:x:0:\n');
  cpio.file('etc/profile', "export PS1='muser-vm:\\w\\$ '\n");
  for (const m of c.modules) cpio.file(`lib/modules/${m.name}.ko`, m.data);
  cpio.file('muser/config', c.config);
  if (c.cmd !== undefined) cpio.file('muser/cmd', `${c.cmd}\n`);
  writeFileSync(out, cpio.finish());
}

/** `s` quoted for a POSIX shell. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
