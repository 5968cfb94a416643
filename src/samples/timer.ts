/**
 * The `timer` sample, muser's version of the original sample server:
 *
 * - Ids: vendor 0xdead, device 0xbeef, subsystem 0xcafe / 0xbabe; INTx.
 * - BAR0, 8 bytes (an I/O BAR: memory BARs are at least 16 bytes): writing
 *   a time T (seconds since the Epoch, little-endian 64-bit) arms a timer
 *   that fires INTx at T. Reading returns now minus T.
 * - BAR1, 16 KiB of memory in a memfd. Its first and last 4 KiB pages are
 *   client-mappable (sparse mmap); the middle is served by messages.
 * - When the timer fires the device raises INTx, then does DMA, in the
 *   original sample's order: first into the second DMA region, if the
 *   client shared its fd, it writes 4 x 1 KiB ('a'..'d') through that fd
 *   (mapped, or by pwrite; either shows in the dirty log) and reads it
 *   back; then into the
 *   first DMA region (lowest IOVA) it writes 4 x 1 KiB ('A'..'D') with
 *   DMA_WRITE messages and reads them back with DMA_READ messages.
 *   Each path checks a CRC-32 of what it wrote against what it read.
 *   The timer does not wait for Bus Master Enable (`requireBusMaster:
 *   false`): the original sample client never sets it.
 * - Migration (PRE_COPY and P2P offered): PRE_COPY streams BAR1; STOP_COPY
 *   streams BAR1's contents, then BAR0's 8 bytes. A destination takes the
 *   last 16 KiB + 8 bytes of what it receives (a client may send the
 *   PRE_COPY data first) and, once running, re-arms the timer from BAR0: a
 *   time already past fires at once. While stopped the timer is off; a
 *   deadline that has not fired yet is re-armed when the device runs again.
 */
import { crc32 } from 'node:zlib';
import { DeviceError, Errno, mayInterrupt, type Device, type DeviceSpec, type MigrationLoader } from '../index.js';

export const TIMER_IDS = { vendorId: 0xdead, deviceId: 0xbeef, subsystemVendorId: 0xcafe, subsystemId: 0xbabe } as const;
export const BAR0_SIZE = 8;
export const BAR1_SIZE = 16 * 1024;
const PAGE = 4096;
/** Size of the STOP_COPY stream: BAR1, then BAR0. */
export const TIMER_STATE_SIZE = BAR1_SIZE + BAR0_SIZE;
/** Longest delay setTimeout takes; longer waits are chained. */
const MAX_DELAY = 0x7fffffff;
/** Most PRE_COPY images a destination accepts before the final state. */
const MAX_PRE_COPY_IMAGES = 64;

/** Options for {@link timerDevice}. */
export interface TimerOptions {
  /** Log each event to stderr. */
  verbose?: boolean;
  /** Where log lines go (default: stderr when verbose). */
  log?: (line: string) => void;
}

/** What the timer did last, for logs and tests. */
export interface TimerStatus {
  fired: number;
  dma: { messages?: 'ok' | 'mismatch' | 'skipped' | 'failed'; direct?: 'ok' | 'mismatch' | 'skipped' | 'failed' };
}

/** Builds the timer device description (one per device: it holds the timer). */
export function timerDevice(options: TimerOptions = {}): DeviceSpec {
  const log = options.log ?? (options.verbose ? (l: string) => process.stderr.write(`[timer ${process.pid}] ${l}\n`) : () => {});
  const bar0 = Buffer.alloc(BAR0_SIZE);
  let handle: NodeJS.Timeout | undefined;
  let running = true;
  /** A deadline was set and has not fired yet (on this side of a migration). */
  let pending = false;
  const status: TimerStatus = { fired: 0, dma: {} };

  const deadline = (): bigint => bar0.readBigInt64LE(0);

  const disarm = (): void => {
    if (handle) clearTimeout(handle);
    handle = undefined;
  };

  const arm = (device: Device): void => {
    disarm();
    const t = deadline();
    if (t === 0n || !pending) return;
    const schedule = (): void => {
      const ms = Number(t) * 1000 - Date.now();
      if (ms > MAX_DELAY) handle = setTimeout(schedule, MAX_DELAY);
      else handle = setTimeout(() => fire(device), Math.max(0, ms));
    };
    schedule();
    log(`armed for ${t} (in ${Math.max(0, Number(t) - Date.now() / 1000).toFixed(1)} s)`);
  };

  const fire = (device: Device): void => {
    handle = undefined;
    pending = false;
    status.fired++;
    const result = device.trigger(0);
    log(`fired at ${Math.floor(Date.now() / 1000)}: INTx ${result}`);
    doDma(device).catch((e: unknown) => log(`DMA failed: ${(e as Error).message}`));
  };

  const doDma = async (device: Device): Promise<void> => {
    status.dma = {};
    if (!device.connected) return;
    const dma = device.dma;
    const regions = dma.regions().filter((r) => r.size >= PAGE && r.prot === 3);
    const [first, second] = regions;
    if (!first) {
      status.dma = { messages: 'skipped', direct: 'skipped' };
      log('no DMA region to write to');
      return;
    }
    // As the original sample: first through the client's fd, then by
    // messages. Its client unmaps everything right after the last DMA
    // message, so the direct DMA must not come after them.
    if (second?.shared) {
      // Without messages: through the mapping of a sealed memfd, or by
      // pwrite/pread on a file that could shrink (the original client's
      // temporary file). Either way the writes mark the page dirty while logging.
      const direct = Buffer.alloc(PAGE);
      for (let i = 0; i < 4; i++) {
        direct.fill(0x61 + i, i * 1024, (i + 1) * 1024);
        await dma.write(second.iova + i * 1024, direct.subarray(i * 1024, (i + 1) * 1024));
      }
      const read = Buffer.concat([await dma.read(second.iova, 2048), await dma.read(second.iova + 2048, 2048)]);
      status.dma.direct = crc32(read) === crc32(direct) ? 'ok' : 'mismatch';
      log(`DMA through the shared fd (${second.direct ? 'mapped' : 'pread/pwrite'}) at 0x${second.iova.toString(16)}: ${status.dma.direct}`);
    } else {
      status.dma.direct = 'skipped';
    }
    // Through messages, in 1 KiB pieces (below any sensible max_data_xfer_size).
    const written = Buffer.alloc(PAGE);
    for (let i = 0; i < 4; i++) written.fill(0x41 + i, i * 1024, (i + 1) * 1024);
    try {
      for (let i = 0; i < 4; i++) await dma.messageWrite(first.iova + i * 1024, written.subarray(i * 1024, (i + 1) * 1024));
      const back = Buffer.alloc(PAGE);
      for (let i = 0; i < 4; i++) (await dma.messageRead(first.iova + i * 1024, 1024)).copy(back, i * 1024);
      status.dma.messages = crc32(back) === crc32(written) ? 'ok' : 'mismatch';
    } catch (e) {
      status.dma.messages = 'failed';
      throw e;
    }
    log(`DMA by messages at 0x${first.iova.toString(16)}: ${status.dma.messages}`);
  };

  const bar1Chunks = function* (device: Device): Generator<Uint8Array> {
    const mem = device.regionMemory(1);
    for (let off = 0; off < mem.length; off += PAGE) yield Buffer.from(mem.subarray(off, off + PAGE));
  };

  /** Keeps the last TIMER_STATE_SIZE bytes of the stream; applies them at the end. */
  const loader = (device: Device): MigrationLoader => {
    let tail = Buffer.alloc(0);
    let total = 0;
    return {
      write(chunk) {
        total += chunk.length;
        if (total > TIMER_STATE_SIZE + MAX_PRE_COPY_IMAGES * BAR1_SIZE) throw new DeviceError(Errno.ENOSPC, `timer: ${total} bytes of migration data is too much`);
        tail = Buffer.concat([tail, chunk]);
        if (tail.length > TIMER_STATE_SIZE) tail = tail.subarray(tail.length - TIMER_STATE_SIZE);
      },
      end() {
        if (total < TIMER_STATE_SIZE || (total - TIMER_STATE_SIZE) % BAR1_SIZE !== 0) {
          throw new DeviceError(Errno.EINVAL, `timer: ${total} bytes of migration data; want ${TIMER_STATE_SIZE} (after whole BAR1 images)`);
        }
        device.regionMemory(1).set(tail.subarray(0, BAR1_SIZE));
        tail.copy(bar0, 0, BAR1_SIZE);
        // Whether it fired on the source is unknown here: re-arm from BAR0.
        pending = deadline() !== 0n;
        log(`loaded: BAR0 = ${deadline()}`);
      },
    };
  };

  return {
    name: 'timer',
    identity: { ...TIMER_IDS, classCode: 0xff0000 },
    interrupts: { intx: true },
    // Its clients are test programs, not guests: libvfio-user's sample
    // client maps DMA and waits for the timer's DMA without ever setting
    // Bus Master Enable. A device a guest drives keeps the strict default.
    requireBusMaster: false,
    state: { status },
    bars: {
      0: {
        size: BAR0_SIZE,
        kind: 'io',
        read(offset, length) {
          const v = Buffer.alloc(BAR0_SIZE);
          v.writeBigInt64LE(BigInt(Math.floor(Date.now() / 1000)) - deadline());
          return v.subarray(offset, offset + length);
        },
        write(offset, data, device) {
          data.copy(bar0, offset);
          pending = deadline() !== 0n;
          log(`BAR0 <- ${deadline()}`);
          if (running) arm(device);
        },
      },
      1: {
        size: BAR1_SIZE,
        memory: { mmap: [{ offset: 0, size: PAGE }, { offset: BAR1_SIZE - PAGE, size: PAGE }] },
      },
    },
    migration: {
      preCopy: true,
      p2p: true,
      onTransition(from, to, device) {
        log(`migration: ${from} -> ${to}`);
        const run = mayInterrupt(to);
        if (run && !running) arm(device);
        if (!run) disarm();
        running = run;
      },
      savePreCopy: (device) => bar1Chunks(device),
      save: function* (device) {
        yield* bar1Chunks(device);
        yield Buffer.from(bar0);
      },
      loader,
    },
    onReset(reason, device) {
      disarm();
      bar0.fill(0);
      device.regionMemory(1).fill(0);
      running = true;
      pending = false;
      status.fired = 0;
      status.dma = {};
      log(`reset (${reason})`);
    },
  };
}
