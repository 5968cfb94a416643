/**
 * Command handlers: decode a request, act on the device or connection,
 * build the reply. Handlers throw DeviceError / ProtocolError to answer
 * with an errno; the session turns any other exception into EIO.
 */
import {
  Command,
  DeviceInfoFlag,
  DmaUnmapFlag,
  HeaderFlag,
  IrqInfoFlag,
  IrqSetFlag,
  IoFdType,
  IoeventfdFlag,
  RegionCapId,
  RegionInfoFlag,
} from '../protocol/constants.js';
import { decodeDeviceInfoRequest, encodeDeviceInfoReply } from '../protocol/device-info.js';
import { decodeDmaMapRequest, decodeDmaUnmapRequest, encodeDmaUnmapReply } from '../protocol/dma.js';
import { decodeIrqInfoRequest, decodeSetIrqsRequest, encodeIrqInfoReply } from '../protocol/irq.js';
import { decodeRegionReadRequest, decodeRegionWriteRequest, encodeRegionReadReply, encodeRegionWriteReply, type RegionAccess } from '../protocol/region-access.js';
import { decodeRegionInfoRequest, encodeRegionInfoReply, type RegionCap } from '../protocol/region-info.js';
import { decodeRegionIoFdsRequest, encodeRegionIoFdsReply, type SubRegionIoFd } from '../protocol/region-io-fds.js';
import { decodeRegionWriteMultiRequest, encodeRegionWriteMultiReply } from '../protocol/region-write-multi.js';
import { decodeEmpty } from '../protocol/wire.js';
import { IRQ_INDEX_COUNT, IrqIndex } from '../device/irqs.js';
import { PCI_REGION_COUNT } from '../device/regions.js';
import { DeviceError, Errno } from '../device/errors.js';
import { checkAccess, readRegion, writeRegion } from '../device/region-io.js';
import type { MaybePromise } from '../device/types.js';
import { negotiate } from './negotiate.js';
import { handleDeviceFeature, handleMigDataRead, handleMigDataWrite } from './feature.js';
import type { Reply, Request, SessionContext as Session } from './context.js';

/** What a handler produces: a whole message, a payload with fds, or nothing (empty reply). */
export type { Reply } from './context.js';

type Handler = (s: Session, req: Request) => Reply | Promise<Reply>;

const REPLY = HeaderFlag.REPLY;

/** Routes one command to its handler. */
export function dispatch(s: Session, req: Request): Reply | Promise<Reply> {
  const cmd = req.header.command;
  if (req.fds.length > s.limits.maxMsgFds) throw new DeviceError(Errno.EINVAL, `${req.fds.length} fds exceed the limit of ${s.limits.maxMsgFds}`);
  if (cmd === Command.VERSION) return negotiate(s, req);
  if (!s.negotiated) throw new DeviceError(Errno.EINVAL, `command ${cmd} before VERSION`);
  const h = HANDLERS[cmd];
  if (!h) throw new DeviceError(Errno.ENOSYS, `unknown command ${cmd}`);
  return h(s, req);
}

/** Takes ownership of the fd at `i` (or undefined when none came). */
function takeFd(req: Request, i: number): number | undefined {
  const fd = req.fds[i];
  if (fd === undefined || fd < 0) return undefined;
  req.fds[i] = -1;
  return fd;
}

function dmaMap(s: Session, req: Request): Reply {
  if (s.device.spec.dma === false) throw new DeviceError(Errno.ENOTSUP, 'device does not do DMA');
  const m = decodeDmaMapRequest(req.payload);
  if (req.fds.length > 1) throw new DeviceError(Errno.EINVAL, 'DMA_MAP carries at most one fd');
  s.dmaTable.add(m.address, m.size, m.offset, m.flags, takeFd(req, 0));
  return undefined;
}

function dmaUnmap(s: Session, req: Request): Reply | Promise<Reply> {
  const m = decodeDmaUnmapRequest(req.payload);
  if (m.flags & ~DmaUnmapFlag.ALL) throw new DeviceError(Errno.EINVAL, `DMA_UNMAP flags 0x${m.flags.toString(16)} not supported`);
  let removed;
  if (m.flags & DmaUnmapFlag.ALL) {
    if (m.address !== 0 || m.size !== 0) throw new DeviceError(Errno.EINVAL, 'DMA_UNMAP ALL needs address and size 0');
    removed = s.dmaTable.clear();
  } else {
    removed = [s.dmaTable.remove(m.address, m.size)];
  }
  const reply: Reply = { payload: encodeDmaUnmapReply(m) };
  // Memory pinned by device I/O in flight is unmapped, and the unmap confirmed, when that I/O ends.
  const waits = removed.map((r) => s.dmaTable.whenUnmapped(r)).filter((w) => w !== undefined);
  return waits.length === 0 ? reply : Promise.all(waits).then(() => reply);
}

function deviceInfo(s: Session, req: Request): Reply {
  decodeDeviceInfoRequest(req.payload);
  return {
    payload: encodeDeviceInfoReply({
      argsz: 16,
      flags: DeviceInfoFlag.RESET | DeviceInfoFlag.PCI,
      numRegions: Math.max(PCI_REGION_COUNT, s.device.regions.length),
      numIrqs: IRQ_INDEX_COUNT,
    }),
  };
}

function regionInfo(s: Session, req: Request): Reply {
  const m = decodeRegionInfoRequest(req.payload);
  if (m.index >= Math.max(PCI_REGION_COUNT, s.device.regions.length)) throw new DeviceError(Errno.EINVAL, `no region ${m.index}`);
  const r = s.device.regions[m.index];
  if (!r) return { payload: encodeRegionInfoReply({ flags: 0, index: m.index, size: 0, offset: 0 }, [], m.argsz) };
  const caps: RegionCap[] = [];
  if (r.sparse) caps.push({ id: RegionCapId.SPARSE_MMAP, areas: r.mmapAreas.map((a) => ({ ...a })) });
  if (r.type) caps.push({ id: RegionCapId.TYPE, type: r.type.type, subtype: r.type.subtype });
  const flags = r.flags | (caps.length > 0 ? RegionInfoFlag.CAPS : 0);
  const payload = encodeRegionInfoReply({ flags, index: m.index, size: r.size, offset: 0 }, caps, m.argsz);
  const complete = payload.readUInt32LE(0) <= m.argsz;
  const fds = r.memory && r.mmapAreas.length > 0 && complete ? [r.memory.fd] : undefined;
  return { payload, fds };
}

function regionIoFds(s: Session, req: Request): Reply {
  const m = decodeRegionIoFdsRequest(req.payload);
  const r = s.device.regions[m.index];
  if (!r) throw new DeviceError(Errno.EINVAL, `no region ${m.index}`);
  const limit = s.negotiated!.maxMsgFds;
  if (r.ioeventfds.length > limit) throw new DeviceError(Errno.E2BIG, `region ${m.index} has ${r.ioeventfds.length} doorbells; the client takes ${limit} fds per message`);
  const fds = s.ioEventFds.fds(r.index);
  const subs: SubRegionIoFd[] = r.ioeventfds.map((io, i) => ({
    offset: io.offset,
    size: io.size,
    fdIndex: i,
    type: IoFdType.IOEVENTFD,
    flags: io.datamatch === undefined ? 0 : IoeventfdFlag.DATAMATCH,
    datamatch: BigInt(io.datamatch ?? 0),
  }));
  const payload = encodeRegionIoFdsReply(m.index, subs, m.argsz);
  const complete = payload.readUInt32LE(0) <= m.argsz;
  return { payload, fds: complete && fds.length > 0 ? fds : undefined };
}

const IRQ_FLAGS = [
  IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED,
  IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE | IrqInfoFlag.NORESIZE,
  IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE | IrqInfoFlag.NORESIZE,
  IrqInfoFlag.EVENTFD,
  IrqInfoFlag.EVENTFD,
];

function irqInfo(s: Session, req: Request): Reply {
  const m = decodeIrqInfoRequest(req.payload);
  if (m.index > IrqIndex.REQ) throw new DeviceError(Errno.EINVAL, `no IRQ index ${m.index}`);
  return { payload: encodeIrqInfoReply({ argsz: 16, flags: IRQ_FLAGS[m.index], index: m.index, count: s.device.irqs.count(m.index) }) };
}

function setIrqs(s: Session, req: Request): Reply {
  const m = decodeSetIrqsRequest(req.payload);
  const irqs = s.device.irqs;
  irqs.checkRange(m.index, m.start, m.count);
  const action = m.flags & (IrqSetFlag.ACTION_MASK | IrqSetFlag.ACTION_UNMASK | IrqSetFlag.ACTION_TRIGGER);
  const data = m.flags & (IrqSetFlag.DATA_NONE | IrqSetFlag.DATA_BOOL | IrqSetFlag.DATA_EVENTFD);
  if (data !== IrqSetFlag.DATA_EVENTFD && req.fds.length > 0) throw new DeviceError(Errno.EINVAL, 'SET_IRQS: fds without DATA_EVENTFD');
  if (action === IrqSetFlag.ACTION_TRIGGER) setIrqTrigger(s, req, m.index, m.start, m.count, data, m.data);
  else setIrqMask(s, req, m.index, m.start, m.count, action === IrqSetFlag.ACTION_MASK, data, m.data);
  return undefined;
}

function setIrqTrigger(s: Session, req: Request, index: number, start: number, count: number, data: number, bools?: Uint8Array): void {
  const irqs = s.device.irqs;
  if (data === IrqSetFlag.DATA_EVENTFD) {
    // QEMU sends either `count` fds, or none to unassign those vectors.
    if (req.fds.length !== 0 && req.fds.length !== count) {
      throw new DeviceError(Errno.EINVAL, `SET_IRQS: ${req.fds.length} fds for ${count} vectors`);
    }
    const fds = req.fds.length === 0 ? new Array<number>(count).fill(-1) : req.fds.map((_, i) => takeFd(req, i)!);
    irqs.setEventfds(index, start, fds);
  } else if (data === IrqSetFlag.DATA_NONE && count === 0) {
    irqs.disable(index);
  } else {
    for (let i = 0; i < count; i++) if (data === IrqSetFlag.DATA_NONE || bools![i]) s.device.triggerIrq(index, start + i);
  }
}

function setIrqMask(s: Session, req: Request, index: number, start: number, count: number, mask: boolean, data: number, bools?: Uint8Array): void {
  if (index > IrqIndex.MSIX) throw new DeviceError(Errno.EINVAL, `IRQ index ${index} is not maskable`);
  if (data === IrqSetFlag.DATA_EVENTFD) {
    if (mask || index !== IrqIndex.INTX || count !== 1 || req.fds.length > 1) {
      throw new DeviceError(Errno.EINVAL, 'SET_IRQS: an eventfd can only unmask INTx');
    }
    s.device.irqs.setUnmaskFd(takeFd(req, 0) ?? -1);
    return;
  }
  s.device.irqs.setMasked(index, start, count, mask, data === IrqSetFlag.DATA_BOOL ? bools : undefined);
}

function checkXfer(s: Session, count: number): void {
  if (count > s.limits.maxDataXferSize) throw new DeviceError(Errno.E2BIG, `${count} bytes exceed max_data_xfer_size ${s.limits.maxDataXferSize}`);
}

function regionRead(s: Session, req: Request): Reply | Promise<Reply> {
  const m = decodeRegionReadRequest(req.payload);
  checkXfer(s, m.count);
  const r = checkAccess(s.device, m.region, m.offset, m.count, false);
  return readReply(s, req.header.msgId, m, readRegion(s.device, r, m.offset, m.count));
}

/** The reply to the REGION_READ `m` once its `data` is there (the spin watch sees the data). */
export function readReply(s: Session, msgId: number, m: RegionAccess, data: Promise<Uint8Array>): Promise<Buffer>;
export function readReply(s: Session, msgId: number, m: RegionAccess, data: MaybePromise<Uint8Array>): Buffer | Promise<Buffer>;
export function readReply(s: Session, msgId: number, m: RegionAccess, data: MaybePromise<Uint8Array>): Buffer | Promise<Buffer> {
  const header = { msgId, command: Command.REGION_READ, flags: REPLY };
  const reply = (d: Uint8Array): Buffer => {
    s.spin.read(m.region, m.offset, d);
    return encodeRegionReadReply({ offset: m.offset, region: m.region, count: m.count, data: d }, header);
  };
  return data instanceof Promise ? data.then(reply) : reply(data);
}

function regionWrite(s: Session, req: Request): Reply | Promise<Reply> {
  const m = decodeRegionWriteRequest(req.payload);
  checkXfer(s, m.count);
  const r = checkAccess(s.device, m.region, m.offset, m.count, true);
  s.spin.other();
  return writeReply(req.header.msgId, m, writeRegion(s.device, r, m.offset, m.data as Buffer));
}

/** The reply to the REGION_WRITE `m` once the write is `done`. */
export function writeReply(msgId: number, m: RegionAccess, done: Promise<void>): Promise<Buffer>;
export function writeReply(msgId: number, m: RegionAccess, done: MaybePromise<void>): Buffer | Promise<Buffer>;
export function writeReply(msgId: number, m: RegionAccess, done: MaybePromise<void>): Buffer | Promise<Buffer> {
  const header = { msgId, command: Command.REGION_WRITE, flags: REPLY };
  const reply = (): Buffer => encodeRegionWriteReply({ offset: m.offset, region: m.region, count: m.count }, header);
  return done instanceof Promise ? done.then(reply) : reply();
}

async function writeMultiAsync(s: Session, writes: ReturnType<typeof decodeRegionWriteMultiRequest>['writes'], from: number, pending: Promise<void>): Promise<Reply> {
  await pending;
  for (let i = from; i < writes.length; i++) {
    const w = writes[i];
    const r = checkAccess(s.device, w.region, w.offset, w.count, true);
    await writeRegion(s.device, r, w.offset, Buffer.from(w.data.buffer, w.data.byteOffset, w.data.length));
  }
  return multiReply(writes.length);
}

function regionWriteMulti(s: Session, req: Request): Reply | Promise<Reply> {
  const { writes } = decodeRegionWriteMultiRequest(req.payload);
  s.spin.other();
  for (let i = 0; i < writes.length; i++) {
    const w = writes[i];
    const r = checkAccess(s.device, w.region, w.offset, w.count, true);
    const done = writeRegion(s.device, r, w.offset, Buffer.from(w.data.buffer, w.data.byteOffset, w.data.length));
    if (done instanceof Promise) return writeMultiAsync(s, writes, i + 1, done);
  }
  return multiReply(writes.length);
}

function multiReply(count: number): Reply {
  return { payload: encodeRegionWriteMultiReply({ wrCnt: count }) };
}

function deviceReset(s: Session, req: Request): Promise<Reply> {
  decodeEmpty(req.payload, 'DEVICE_RESET');
  return s.device.reset('client').then(() => undefined);
}

function serverOnly(_s: Session, req: Request): Reply {
  throw new DeviceError(Errno.EINVAL, `command ${req.header.command} goes from server to client`);
}

const HANDLERS: Record<number, Handler | undefined> = {
  [Command.DMA_MAP]: dmaMap,
  [Command.DMA_UNMAP]: dmaUnmap,
  [Command.DEVICE_GET_INFO]: deviceInfo,
  [Command.DEVICE_GET_REGION_INFO]: regionInfo,
  [Command.DEVICE_GET_REGION_IO_FDS]: regionIoFds,
  [Command.DEVICE_GET_IRQ_INFO]: irqInfo,
  [Command.DEVICE_SET_IRQS]: setIrqs,
  [Command.REGION_READ]: regionRead,
  [Command.REGION_WRITE]: regionWrite,
  [Command.DMA_READ]: serverOnly,
  [Command.DMA_WRITE]: serverOnly,
  [Command.DEVICE_RESET]: deviceReset,
  [Command.REGION_WRITE_MULTI]: regionWriteMulti,
  [Command.DEVICE_FEATURE]: handleDeviceFeature,
  [Command.MIG_DATA_READ]: handleMigDataRead,
  [Command.MIG_DATA_WRITE]: handleMigDataWrite,
};
