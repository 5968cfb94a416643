/**
 * VFIO_USER_DEVICE_FEATURE (16): migration v2 and DMA dirty logging.
 *
 * Payload: u32 argsz, u32 flags (feature id in bits 0-15, GET bit 16,
 * SET bit 17, PROBE bit 18), then feature data, per the spec:
 * - MIGRATION (1), GET reply: u64 flags ({@link MigrationFlag}).
 * - MIG_DEVICE_STATE (2), SET request / GET and SET replies:
 *   u32 device_state ({@link MigrationState}), u32 data_fd (unused).
 * - DMA_LOGGING_START (6), SET request and reply: u64 page_size,
 *   u32 num_ranges, u32 reserved, then num_ranges x {u64 iova, u64 length}
 *   inline (vfio.h has a pointer there; vfio-user inlines the array).
 * - DMA_LOGGING_STOP (7): no data.
 * - DMA_LOGGING_REPORT (8), GET request: u64 iova, u64 length,
 *   u64 page_size; reply: the same 24 bytes then the bitmap (u64 words).
 *
 * Data is decoded according to the feature id and operation found in flags
 * (a PROBE carries no data; data the operation does not define is ignored);
 * unknown features keep their bytes raw. Flags with unknown bits, with none
 * of GET/SET/PROBE, or with GET and SET without PROBE are EINVAL; so is
 * argsz below 8, a device_state above 7 and ranges overrunning the payload.
 */
import { DeviceFeatureFlag, FeatureId, MigrationState } from './constants.js';
import { invalid } from './errors.js';
import { EMPTY, alloc, checkArgsz, defineMessage, need } from './wire.js';

const KNOWN_FLAGS = DeviceFeatureFlag.MASK | DeviceFeatureFlag.GET | DeviceFeatureFlag.SET | DeviceFeatureFlag.PROBE;

/** One IOVA range to log. */
export interface DmaLoggingRange {
  iova: number;
  length: number;
}

/** Feature data, tagged by what the feature id and operation define. */
export type FeatureData =
  | { kind: 'none' }
  | { kind: 'raw'; bytes: Uint8Array }
  | { kind: 'migration'; flags: number }
  | { kind: 'mig-state'; deviceState: MigrationState; dataFd: number }
  | { kind: 'dma-logging-start'; pageSize: number; ranges: DmaLoggingRange[] }
  | { kind: 'dma-logging-report'; iova: number; length: number; pageSize: number }
  | { kind: 'dma-logging-bitmap'; iova: number; length: number; pageSize: number; bitmap: Uint8Array };

/** A DEVICE_FEATURE request or reply. */
export interface DeviceFeature {
  /** Request: largest reply payload accepted. Reply: payload size. */
  argsz: number;
  /** Feature id | {@link DeviceFeatureFlag} GET/SET/PROBE. */
  flags: number;
  /** Decoded data; `raw` bytes are a zero-copy subarray of the payload. */
  data: FeatureData;
}

const HEAD = defineMessage<Omit<DeviceFeature, 'data'>>('DEVICE_FEATURE', { argsz: 'u32', flags: 'u32' });
const HEAD_SIZE = HEAD.size;
const MIGRATION = defineMessage<{ flags: number }>('MIGRATION feature', { flags: 'u64' });
const MIG_STATE = defineMessage<{ deviceState: number; dataFd: number }>('MIG_DEVICE_STATE', {
  deviceState: 'u32',
  dataFd: 'u32',
});
const LOGGING_START = defineMessage<{ pageSize: number; numRanges: number }>('DMA_LOGGING_START', {
  pageSize: 'u64',
  numRanges: 'u32',
  _reserved: 4,
});
const RANGE = defineMessage<DmaLoggingRange>('DMA_LOGGING range', { iova: 'u64', length: 'u64' });
const REPORT = defineMessage<{ iova: number; length: number; pageSize: number }>('DMA_LOGGING_REPORT', {
  iova: 'u64',
  length: 'u64',
  pageSize: 'u64',
});

/** The feature id in a DEVICE_FEATURE flags word. */
export function featureId(flags: number): number {
  return flags & DeviceFeatureFlag.MASK;
}

/** Encodes a DEVICE_FEATURE request payload. */
export function encodeDeviceFeatureRequest(m: DeviceFeature): Buffer {
  return encodeFeature(m);
}

/** Decodes and validates a DEVICE_FEATURE request payload. */
export function decodeDeviceFeatureRequest(payload: Buffer): DeviceFeature {
  return decodeFeature(payload, 'DEVICE_FEATURE', requestKind);
}

/** Encodes a DEVICE_FEATURE reply payload. */
export function encodeDeviceFeatureReply(m: DeviceFeature): Buffer {
  return encodeFeature(m);
}

/** Decodes and validates a DEVICE_FEATURE reply payload. */
export function decodeDeviceFeatureReply(payload: Buffer): DeviceFeature {
  return decodeFeature(payload, 'DEVICE_FEATURE reply', replyKind);
}

/** EINVAL unless the flags name a well-formed operation. */
export function checkFeatureFlags(flags: number): void {
  if ((flags & ~KNOWN_FLAGS) !== 0) invalid(`DEVICE_FEATURE: unknown flags 0x${flags.toString(16)}`);
  const get = (flags & DeviceFeatureFlag.GET) !== 0;
  const set = (flags & DeviceFeatureFlag.SET) !== 0;
  const probe = (flags & DeviceFeatureFlag.PROBE) !== 0;
  if (!get && !set && !probe) invalid('DEVICE_FEATURE: none of GET, SET, PROBE');
  if (get && set && !probe) invalid('DEVICE_FEATURE: GET and SET without PROBE');
}

type Kind = FeatureData['kind'];

function requestKind(flags: number): Kind {
  if (flags & DeviceFeatureFlag.PROBE) return 'none';
  const id = featureId(flags);
  if (flags & DeviceFeatureFlag.GET) {
    if (id === FeatureId.MIGRATION || id === FeatureId.MIG_DEVICE_STATE) return 'none';
    return id === FeatureId.DMA_LOGGING_REPORT ? 'dma-logging-report' : 'raw';
  }
  if (id === FeatureId.MIG_DEVICE_STATE) return 'mig-state';
  if (id === FeatureId.DMA_LOGGING_START) return 'dma-logging-start';
  return id === FeatureId.DMA_LOGGING_STOP ? 'none' : 'raw';
}

function replyKind(flags: number): Kind {
  if (flags & DeviceFeatureFlag.PROBE) return 'none';
  const id = featureId(flags);
  if (id === FeatureId.MIG_DEVICE_STATE) return 'mig-state';
  if (flags & DeviceFeatureFlag.GET) {
    if (id === FeatureId.MIGRATION) return 'migration';
    return id === FeatureId.DMA_LOGGING_REPORT ? 'dma-logging-bitmap' : 'raw';
  }
  if (id === FeatureId.DMA_LOGGING_START) return 'dma-logging-start';
  return id === FeatureId.DMA_LOGGING_STOP ? 'none' : 'raw';
}

function decodeFeature(payload: Buffer, what: string, kindOf: (flags: number) => Kind): DeviceFeature {
  const { argsz, flags } = HEAD.decode(payload, what);
  checkArgsz(argsz, HEAD_SIZE, what);
  checkFeatureFlags(flags);
  return { argsz, flags, data: decodeData(kindOf(flags), payload.subarray(HEAD_SIZE)) };
}

function decodeData(kind: Kind, d: Buffer): FeatureData {
  switch (kind) {
    case 'none':
      return { kind };
    case 'raw':
      return { kind, bytes: d };
    case 'migration':
      return { kind, flags: MIGRATION.decode(d, 'MIGRATION feature').flags };
    case 'mig-state':
      return decodeMigState(d);
    case 'dma-logging-start':
      return decodeLoggingStart(d);
    case 'dma-logging-report':
      return { kind, ...REPORT.decode(d, 'DMA_LOGGING_REPORT') };
    case 'dma-logging-bitmap':
      return { kind, ...REPORT.decode(d, 'DMA_LOGGING_REPORT reply'), bitmap: d.subarray(REPORT.size) };
  }
}

function decodeMigState(d: Buffer): FeatureData {
  const { deviceState, dataFd } = MIG_STATE.decode(d, 'MIG_DEVICE_STATE');
  if (deviceState > MigrationState.PRE_COPY_P2P) invalid(`device_state ${deviceState} unknown`);
  return { kind: 'mig-state', deviceState, dataFd };
}

function decodeLoggingStart(d: Buffer): FeatureData {
  const { pageSize, numRanges } = LOGGING_START.decode(d, 'DMA_LOGGING_START');
  need(d, LOGGING_START.size + RANGE.size * numRanges, 'DMA_LOGGING_START ranges');
  return { kind: 'dma-logging-start', pageSize, ranges: RANGE.readArray(d, LOGGING_START.size, numRanges) };
}

function encodeFeature(m: DeviceFeature): Buffer {
  const data = encodeData(m.data);
  const b = alloc(HEAD_SIZE + data.length);
  HEAD.write(b, 0, m);
  b.set(data, HEAD_SIZE);
  return b;
}

function encodeData(d: FeatureData): Uint8Array {
  switch (d.kind) {
    case 'none':
      return EMPTY;
    case 'raw':
      return d.bytes;
    case 'migration':
      return MIGRATION.encode(d);
    case 'mig-state':
      return MIG_STATE.encode(d);
    case 'dma-logging-start':
      return encodeLoggingStart(d.pageSize, d.ranges);
    case 'dma-logging-report':
      return REPORT.encode(d);
    case 'dma-logging-bitmap':
      return Buffer.concat([REPORT.encode(d), d.bitmap]);
  }
}

function encodeLoggingStart(pageSize: number, ranges: readonly DmaLoggingRange[]): Buffer {
  const b = alloc(LOGGING_START.size + RANGE.size * ranges.length);
  LOGGING_START.write(b, 0, { pageSize, numRanges: ranges.length });
  RANGE.writeArray(b, LOGGING_START.size, ranges);
  return b;
}
