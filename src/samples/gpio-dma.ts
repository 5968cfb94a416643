/**
 * A muser test extension of the gpio sample, at BAR 2 offsets 0x80-0xff
 * (which the PCI-IDIO-16 and its driver leave unused): a tiny DMA engine,
 * so that a guest (or a test) can make the device read and write client
 * memory, through zero-copy views where the client shared an fd and through
 * DMA_READ / DMA_WRITE messages where it did not.
 *
 * The registers are the table in {@link GpioDma.registers}.
 *
 * The command runs after the write is answered (the client may need to
 * serve our DMA messages before it can serve more region accesses): poll
 * the status. Each command is logged: `gpio: dma <op> addr=.. len=..
 * via=direct|message|mixed ok|failed ...`.
 */
import type { Device, RegisterEntry } from '../index.js';

export const DMA_EXT_BASE = 0x80;
export const DmaReg = {
  ADDR_LO: 0x80,
  ADDR_HI: 0x84,
  LEN: 0x88,
  CMD: 0x8c,
  STATUS: 0x90,
  SUM: 0x94,
  ERRNO: 0x98,
  DONE: 0x9c,
  WINDOW: 0xc0,
} as const;
export const DmaCmd = { READ: 1, WRITE: 2, SELFTEST: 3 } as const;
export const DmaStatus = { IDLE: 0, BUSY: 1, DONE: 2, FAILED: 3 } as const;
export const DMA_BUFFER_SIZE = 4096;
const WINDOW_SIZE = 64;

/** The DMA engine's state. */
export class GpioDma {
  readonly buffer = Buffer.alloc(DMA_BUFFER_SIZE);
  private address = { low: 0, high: 0 };
  private length = 0;
  private status: number = DmaStatus.IDLE;
  private sum = 0;
  private errno = 0;
  private done = 0;
  private seq = 0;
  /** The running command, for tests. */
  running: Promise<void> | undefined;

  constructor(
    private readonly device: () => Device | undefined,
    private readonly log: (line: string) => void,
  ) {}

  /** The engine's registers, for the gpio board's register map. */
  registers(): RegisterEntry<Device | undefined>[] {
    return [
      { name: 'dma_addr_lo', offset: DmaReg.ADDR_LO, width: 4, description: 'address, low 32 bits', write: (v) => void (this.address.low = v) },
      { name: 'dma_addr_hi', offset: DmaReg.ADDR_HI, width: 4, description: 'address, high 32 bits', write: (v) => void (this.address.high = v) },
      { name: 'dma_len', offset: DmaReg.LEN, width: 4, description: `length, 1..${DMA_BUFFER_SIZE}`, write: (v) => void (this.length = v) },
      {
        name: 'dma_cmd', offset: DmaReg.CMD, width: 1, access: 'wo',
        description: '1 read memory into the buffer, 2 write the buffer to memory, 3 self test (write a pattern, read it back, compare)',
        write: (v) => this.start(v),
      },
      // Polled in a loop: not traced.
      { name: 'dma_status', offset: DmaReg.STATUS, width: 1, access: 'ro', trace: false, description: '0 idle, 1 busy, 2 done, 3 failed', read: () => this.status },
      { name: 'dma_sum', offset: DmaReg.SUM, width: 4, access: 'ro', description: "sum of the buffer's first `length` bytes (u32)", read: () => this.sum },
      { name: 'dma_errno', offset: DmaReg.ERRNO, width: 4, access: 'ro', description: 'errno of the last failure', read: () => this.errno },
      { name: 'dma_done', offset: DmaReg.DONE, width: 4, access: 'ro', description: 'completed commands', read: () => this.done },
      {
        name: 'dma_window', offset: DmaReg.WINDOW, size: WINDOW_SIZE, description: 'the first 64 bytes of the buffer',
        read: (offset, length) => this.buffer.subarray(offset, offset + length),
        write: (offset, data) => void data.copy(this.buffer, offset),
      },
    ];
  }

  /** Back to idle with zeroed registers (the buffer keeps its bytes). */
  reset(): void {
    this.address = { low: 0, high: 0 };
    this.length = 0;
    this.status = DmaStatus.IDLE;
    this.sum = this.errno = this.done = 0;
  }

  private start(cmd: number): void {
    if (this.status === DmaStatus.BUSY) {
      this.log('dma busy: command ignored');
      return;
    }
    const address = this.address.low + this.address.high * 2 ** 32;
    const length = this.length;
    this.status = DmaStatus.BUSY;
    this.running = this.run(cmd, address, length).finally(() => (this.running = undefined));
  }

  private async run(cmd: number, address: number, length: number): Promise<void> {
    const op = cmd === DmaCmd.READ ? 'read' : cmd === DmaCmd.WRITE ? 'write' : cmd === DmaCmd.SELFTEST ? 'selftest' : `cmd${cmd}`;
    const at = `addr=0x${address.toString(16)} len=${length}`;
    let via = '-';
    try {
      if (op.startsWith('cmd')) throw Object.assign(new Error(`unknown command ${cmd}`), { errno: 22 });
      if (length < 1 || length > DMA_BUFFER_SIZE) throw Object.assign(new Error(`length ${length} not 1..${DMA_BUFFER_SIZE}`), { errno: 22 });
      const device = this.device();
      if (!device) throw Object.assign(new Error('no client'), { errno: 107 });
      const dma = device.dma;
      via = pathOf(device, address, length);
      let extra = '';
      if (cmd === DmaCmd.READ) {
        (await dma.read(address, length)).copy(this.buffer);
      } else if (cmd === DmaCmd.WRITE) {
        await dma.write(address, this.buffer.subarray(0, length));
      } else {
        const seed = ++this.seq;
        const pattern = Buffer.alloc(length);
        for (let i = 0; i < length; i++) pattern[i] = (i * 7 + seed * 13 + 1) & 0xff;
        await dma.write(address, pattern);
        const back = await dma.read(address, length);
        if (!back.equals(pattern)) {
          const i = back.findIndex((b, j) => b !== pattern[j]);
          throw Object.assign(new Error(`read back differs at byte ${i}: 0x${back[i].toString(16)} != 0x${pattern[i].toString(16)}`), { errno: 5 });
        }
        back.copy(this.buffer);
        extra = ` pattern=${seed}`;
      }
      let sum = 0;
      for (let i = 0; i < length; i++) sum = (sum + this.buffer[i]) >>> 0;
      this.sum = sum;
      this.done = (this.done + 1) >>> 0;
      this.status = DmaStatus.DONE;
      const head = this.buffer.subarray(0, Math.min(16, length)).toString('hex');
      this.log(`dma ${op} ${at} via=${via} ok sum=0x${sum.toString(16)} head=${head}${extra}`);
    } catch (e) {
      this.errno = errnoOf(e);
      this.status = DmaStatus.FAILED;
      this.log(`dma ${op} ${at} via=${via} failed errno=${errnoOf(e)}: ${(e as Error).message}`);
    }
  }
}

/** How [address, address+length) is reached: mapped fds, messages, or both. */
function pathOf(device: Device, address: number, length: number): string {
  const segs = device.dma.sgl(address, length);
  const direct = segs.filter((s) => s.region.memory !== undefined).length;
  return direct === segs.length ? 'direct' : direct === 0 ? 'message' : 'mixed';
}

/** The errno a failure carries (EIO when it names none). */
function errnoOf(e: unknown): number {
  const n = (e as { errno?: unknown } | undefined)?.errno;
  return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 5;
}
