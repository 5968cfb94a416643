/**
 * Property tests (fast-check, fixed seed, bounded runs):
 * - decode(encode(m)) deep-equals m for every message type;
 * - no byte string makes any decoder throw anything but ProtocolError.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import * as P from '../src/protocol/index.js';
import {
  Command,
  DeviceFeatureFlag,
  FeatureId,
  ProtocolError,
  RegionCapId,
  type DeviceFeature,
  type FeatureData,
  type RegionCap,
} from '../src/protocol/index.js';

const SEED = 0x5eed;
const RUNS = 300;
const params = { seed: SEED, numRuns: RUNS };

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.oneof(fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff), fc.integer({ min: 0, max: 0xffffffff }));
const u64 = fc.oneof(fc.constantFrom(0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1), fc.maxSafeNat());
const atLeast = (min: number): fc.Arbitrary<number> => fc.integer({ min, max: 0xffffffff });
const bytes = (maxLength: number, minLength = 0): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ minLength, maxLength }).map((a) => Buffer.from(a));

/** fc.record with ordinary prototypes, so deepStrictEqual matches decoded objects. */
function rec<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }, opts: { requiredKeys?: [] } = {}): fc.Arbitrary<T> {
  return opts.requiredKeys === undefined
    ? fc.record(model, { noNullPrototype: true })
    : (fc.record(model, { noNullPrototype: true, requiredKeys: [] }) as unknown as fc.Arbitrary<T>);
}

/** Property: decode(encode(m)) deep-equals m. */
function roundTrip<T>(name: string, arb: fc.Arbitrary<T>, enc: (m: T) => Buffer, dec: (p: Buffer) => unknown): void {
  test(name, () => {
    fc.assert(
      fc.property(arb, (m) => {
        assert.deepEqual(dec(enc(m)), m);
      }),
      params,
    );
  });
}

// ---- message arbitraries ----------------------------------------------------

const headerArb = rec({
  msgId: u16,
  command: u16,
  size: atLeast(16),
  flags: fc.tuple(u32, fc.constantFrom(0, 1)).map(([f, t]) => ((f & ~0xf) | t) >>> 0),
  errno: u32,
});

const capsArb: fc.Arbitrary<P.VersionCapabilities> = rec(
  {
    maxMsgFds: fc.maxSafeNat(),
    maxDataXferSize: fc.maxSafeNat(),
    maxDmaMaps: fc.maxSafeNat(),
    pgsizes: fc.maxSafeNat(),
    writeMultiple: fc.boolean(),
    twinSocket: rec({ supported: fc.boolean(), fdIndex: fc.maxSafeNat() }, { requiredKeys: [] }),
    migration: rec({ pgsize: fc.maxSafeNat(), maxBitmapSize: fc.maxSafeNat() }, { requiredKeys: [] }),
  },
  { requiredKeys: [] },
);
const versionArb = rec({ major: u16, minor: u16, capabilities: capsArb });

const dmaMapArb = rec({ argsz: atLeast(32), flags: fc.integer({ min: 0, max: 3 }), offset: u64, address: u64, size: u64 });
const dmaUnmapArb = rec({ argsz: atLeast(24), flags: fc.constantFrom(0, 2), address: u64, size: u64 });
const regionInfoArb = rec({ argsz: atLeast(32), flags: u32, index: u32, capOffset: u32, size: u64, offset: u64 });

const capArb: fc.Arbitrary<RegionCap> = fc.oneof(
  rec({
    id: fc.constant(RegionCapId.SPARSE_MMAP as const),
    areas: fc.array(rec({ offset: u64, size: u64 }), { maxLength: 5 }),
  }),
  rec({ id: fc.constant(RegionCapId.TYPE as const), type: u32, subtype: u32 }),
);
const regionReplyArb = rec({
  desc: rec({ flags: u32, index: u32, size: u64, offset: u64 }),
  caps: fc.array(capArb, { maxLength: 4 }),
  clientArgsz: fc.option(fc.integer({ min: 0, max: 400 }), { nil: undefined }),
});

const subRegionArb = rec({
  offset: u64,
  size: u64,
  fdIndex: u32,
  type: fc.constantFrom(0, 1),
  flags: u32,
  datamatch: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
});
const ioFdsReplyArb = rec({
  index: u32,
  subRegions: fc.array(subRegionArb, { maxLength: 4 }),
  clientArgsz: fc.option(fc.integer({ min: 0, max: 200 }), { nil: undefined }),
});

const irqInfoArb = rec({ argsz: atLeast(16), flags: u32, index: u32, count: u32 });
const irqSetArb: fc.Arbitrary<P.IrqSet> = fc
  .record({
    argsz: atLeast(20),
    data: fc.constantFrom(1, 2, 4),
    action: fc.constantFrom(8, 16, 32),
    index: u32,
    start: u32,
    count: u32,
    bools: bytes(40),
  })
  .map(({ argsz, data, action, index, start, count, bools }) =>
    data === P.IrqSetFlag.DATA_BOOL
      ? { argsz, flags: data | action, index, start, count: bools.length, data: bools }
      : { argsz, flags: data | action, index, start, count },
  );

const accessArb = rec({ offset: u64, region: u32, count: u32 });
const accessDataArb = fc
  .record({ offset: u64, region: u32, data: bytes(64) })
  .map(({ offset, region, data }) => ({ offset, region, count: data.length, data }));
const dmaArb = rec({ address: u64, count: u32 });
const dmaDataArb = fc
  .record({ address: u64, data: bytes(64) })
  .map(({ address, data }) => ({ address, count: data.length, data }));

const writeOneArb = fc
  .record({ offset: u64, region: u32, data: bytes(8, 1) })
  .map(({ offset, region, data }) => ({ offset, region, count: data.length, data }));
const writeMultiArb = rec({ writes: fc.array(writeOneArb, { maxLength: 10 }) });

const { GET, SET, PROBE } = DeviceFeatureFlag;
const reportArb = rec({ iova: u64, length: u64, pageSize: u64 });
const migStateArb = rec({
  kind: fc.constant('mig-state' as const),
  deviceState: fc.integer({ min: 0, max: 7 }),
  dataFd: u32,
});
const startArb = rec({
  kind: fc.constant('dma-logging-start' as const),
  pageSize: u64,
  ranges: fc.array(rec({ iova: u64, length: u64 }), { maxLength: 4 }),
});
const none = fc.constant<FeatureData>({ kind: 'none' });
const unknownId = u16.filter((id) => ![1, 2, 6, 7, 8].includes(id));
const raw = rec({ kind: fc.constant('raw' as const), bytes: bytes(32) });

/** [flags arbitrary, data arbitrary] pairs that the decoder reads back as generated. */
function featureArb(pairs: Array<[fc.Arbitrary<number>, fc.Arbitrary<FeatureData>]>): fc.Arbitrary<DeviceFeature> {
  return fc.oneof(
    ...pairs.map(([flags, data]) => rec({ argsz: atLeast(8), flags, data })),
  );
}
const probeFlags = fc.tuple(u16, fc.constantFrom(0, GET, SET, GET | SET)).map(([id, op]) => (PROBE | op | id) >>> 0);
const featureRequestArb = featureArb([
  [probeFlags, none],
  [fc.constantFrom(GET | FeatureId.MIGRATION, GET | FeatureId.MIG_DEVICE_STATE, SET | FeatureId.DMA_LOGGING_STOP), none],
  [fc.constant(GET | FeatureId.DMA_LOGGING_REPORT), reportArb.map((r) => ({ kind: 'dma-logging-report' as const, ...r }))],
  [fc.constant(SET | FeatureId.MIG_DEVICE_STATE), migStateArb],
  [fc.constant(SET | FeatureId.DMA_LOGGING_START), startArb],
  [fc.tuple(unknownId, fc.constantFrom(GET, SET)).map(([id, op]) => op | id), raw],
]);
const featureReplyArb = featureArb([
  [probeFlags, none],
  [fc.constant(SET | FeatureId.DMA_LOGGING_STOP), none],
  [fc.constant(GET | FeatureId.MIGRATION), u64.map((flags) => ({ kind: 'migration' as const, flags }))],
  [fc.constantFrom(GET | FeatureId.MIG_DEVICE_STATE, SET | FeatureId.MIG_DEVICE_STATE), migStateArb],
  [fc.constant(SET | FeatureId.DMA_LOGGING_START), startArb],
  [fc.constant(GET | FeatureId.DMA_LOGGING_REPORT),
    rec({ r: reportArb, bitmap: bytes(32) }).map(({ r, bitmap }) => ({ kind: 'dma-logging-bitmap' as const, ...r, bitmap }))],
  [fc.tuple(unknownId, fc.constantFrom(GET, SET)).map(([id, op]) => op | id), raw],
]);

const migReadArb = rec({ argsz: atLeast(8), size: u32 });
const migDataArb = fc
  .record({ argsz: atLeast(8), data: bytes(64) })
  .map(({ argsz, data }) => ({ argsz, size: data.length, data }));

// ---- round trips ------------------------------------------------------------

describe('round trip: decode(encode(m)) == m', () => {
  roundTrip('header', headerArb, (h) => {
    const b = Buffer.alloc(16);
    P.encodeHeader(h, b);
    return b;
  }, (b) => P.decodeHeader(b));
  roundTrip('VERSION', versionArb, P.encodeVersion, P.decodeVersion);
  roundTrip('DMA_MAP request', dmaMapArb, P.encodeDmaMapRequest, P.decodeDmaMapRequest);
  roundTrip('DMA_UNMAP request', dmaUnmapArb, P.encodeDmaUnmapRequest, P.decodeDmaUnmapRequest);
  roundTrip('DMA_UNMAP reply', dmaUnmapArb, P.encodeDmaUnmapReply, P.decodeDmaUnmapReply);
  roundTrip('DEVICE_GET_INFO request', rec({ argsz: atLeast(16) }), P.encodeDeviceInfoRequest, P.decodeDeviceInfoRequest);
  roundTrip('DEVICE_GET_INFO reply', rec({ argsz: u32, flags: u32, numRegions: u32, numIrqs: u32 }),
    P.encodeDeviceInfoReply, P.decodeDeviceInfoReply);
  roundTrip('DEVICE_GET_REGION_INFO request', regionInfoArb, P.encodeRegionInfoRequest, P.decodeRegionInfoRequest);
  test('DEVICE_GET_REGION_INFO reply', () => {
    fc.assert(fc.property(regionReplyArb, ({ desc, caps, clientArgsz }) => {
      const full = 32 + caps.reduce((n, c) => n + (c.id === RegionCapId.SPARSE_MMAP ? 16 + 16 * c.areas.length : 16), 0);
      const included = (clientArgsz ?? Infinity) >= full && caps.length > 0;
      const flags = (included ? desc.flags | P.RegionInfoFlag.CAPS : desc.flags & ~P.RegionInfoFlag.CAPS) >>> 0;
      assert.deepEqual(P.decodeRegionInfoReply(P.encodeRegionInfoReply(desc, caps, clientArgsz)), {
        info: { argsz: full, flags, index: desc.index, capOffset: included ? 32 : 0, size: desc.size, offset: desc.offset },
        caps: included ? caps : [],
      });
    }), params);
  });
  roundTrip('DEVICE_GET_REGION_IO_FDS request', rec({ argsz: atLeast(16), flags: fc.constant(0), index: u32, count: u32 }),
    P.encodeRegionIoFdsRequest, P.decodeRegionIoFdsRequest);
  test('DEVICE_GET_REGION_IO_FDS reply', () => {
    fc.assert(fc.property(ioFdsReplyArb, ({ index, subRegions, clientArgsz }) => {
      const full = 16 + 40 * subRegions.length;
      const fits = (clientArgsz ?? Infinity) >= full;
      assert.deepEqual(P.decodeRegionIoFdsReply(P.encodeRegionIoFdsReply(index, subRegions, clientArgsz)), {
        argsz: full, flags: 0, index, count: subRegions.length, subRegions: fits ? subRegions : [],
      });
    }), params);
  });
  roundTrip('DEVICE_GET_IRQ_INFO request', irqInfoArb, P.encodeIrqInfoRequest, P.decodeIrqInfoRequest);
  roundTrip('DEVICE_GET_IRQ_INFO reply', irqInfoArb, P.encodeIrqInfoReply, P.decodeIrqInfoReply);
  roundTrip('DEVICE_SET_IRQS request', irqSetArb, P.encodeSetIrqsRequest, P.decodeSetIrqsRequest);
  roundTrip('REGION_READ request', accessArb, (m) => P.encodeRegionReadRequest(m), P.decodeRegionReadRequest);
  roundTrip('REGION_READ reply', accessDataArb, (m) => P.encodeRegionReadReply(m), P.decodeRegionReadReply);
  roundTrip('REGION_WRITE request', accessDataArb, (m) => P.encodeRegionWriteRequest(m), P.decodeRegionWriteRequest);
  roundTrip('REGION_WRITE reply', accessArb, (m) => P.encodeRegionWriteReply(m), P.decodeRegionWriteReply);
  roundTrip('DMA_READ request', dmaArb, (m) => P.encodeDmaReadRequest(m), P.decodeDmaReadRequest);
  roundTrip('DMA_READ reply', dmaDataArb, (m) => P.encodeDmaReadReply(m), P.decodeDmaReadReply);
  roundTrip('DMA_WRITE request', dmaDataArb, (m) => P.encodeDmaWriteRequest(m), P.decodeDmaWriteRequest);
  roundTrip('DMA_WRITE reply', dmaArb, (m) => P.encodeDmaWriteReply(m), P.decodeDmaWriteReply);
  roundTrip('REGION_WRITE_MULTI request', writeMultiArb, P.encodeRegionWriteMultiRequest, P.decodeRegionWriteMultiRequest);
  roundTrip('REGION_WRITE_MULTI reply', rec({ wrCnt: u64 }), P.encodeRegionWriteMultiReply, P.decodeRegionWriteMultiReply);
  roundTrip('DEVICE_FEATURE request', featureRequestArb, P.encodeDeviceFeatureRequest, P.decodeDeviceFeatureRequest);
  roundTrip('DEVICE_FEATURE reply', featureReplyArb, P.encodeDeviceFeatureReply, P.decodeDeviceFeatureReply);
  roundTrip('MIG_DATA_READ request', migReadArb, P.encodeMigDataReadRequest, P.decodeMigDataReadRequest);
  roundTrip('MIG_DATA_READ reply', migDataArb, P.encodeMigDataReadReply, P.decodeMigDataReadReply);
  roundTrip('MIG_DATA_WRITE request', migDataArb, P.encodeMigDataWriteRequest, P.decodeMigDataWriteRequest);
  test('whole-message encoders match encodeMessage(header, payload)', () => {
    fc.assert(fc.property(accessDataArb, u16, (m, msgId) => {
      const h = { msgId, command: Command.REGION_READ, flags: P.HeaderFlag.REPLY };
      assert.deepEqual(P.encodeRegionReadReply(m, h), P.encodeMessage(h, P.encodeRegionReadReply(m)));
      const d = { address: m.offset, count: m.count, data: m.data };
      assert.deepEqual(P.encodeDmaWriteRequest(d, h), P.encodeMessage(h, P.encodeDmaWriteRequest(d)));
    }), params);
  });
});

// ---- robustness ---------------------------------------------------------------

/** Every decoder, named. */
const decoders: Array<[string, (p: Buffer) => unknown]> = [
  ['header', (b) => P.decodeHeader(b)],
  ...Object.entries(P.requestDecoders).map(([c, d]): [string, (p: Buffer) => unknown] => [`request ${Command[Number(c)]}`, d]),
  ...Object.entries(P.replyDecoders).map(([c, d]): [string, (p: Buffer) => unknown] => [`reply ${Command[Number(c)]}`, d]),
];

/** Valid encodings to mutate, so fuzzing reaches past the first length check. */
const seeds: fc.Arbitrary<Buffer> = fc.oneof(
  versionArb.map(P.encodeVersion),
  dmaMapArb.map(P.encodeDmaMapRequest),
  regionReplyArb.map(({ desc, caps }) => P.encodeRegionInfoReply(desc, caps)),
  ioFdsReplyArb.map(({ index, subRegions }) => P.encodeRegionIoFdsReply(index, subRegions)),
  irqSetArb.map(P.encodeSetIrqsRequest),
  accessDataArb.map((m) => P.encodeRegionWriteRequest(m)),
  dmaDataArb.map((m) => P.encodeDmaReadReply(m)),
  writeMultiArb.map(P.encodeRegionWriteMultiRequest),
  featureRequestArb.map(P.encodeDeviceFeatureRequest),
  featureReplyArb.map(P.encodeDeviceFeatureReply),
  migDataArb.map(P.encodeMigDataWriteRequest),
);

/** A seed with a few bytes overwritten and possibly truncated or extended. */
const mutated: fc.Arbitrary<Buffer> = fc
  .tuple(seeds, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.integer({ min: -8, max: 8 }))
  .map(([seed, edits, delta]) => {
    const b = Buffer.alloc(Math.max(0, seed.length + delta));
    seed.copy(b, 0, 0, Math.min(seed.length, b.length));
    for (const [pos, val] of edits) if (b.length > 0) b[pos % b.length] = val;
    return b;
  });

function onlyProtocolErrors(decode: (p: Buffer) => unknown, payload: Buffer): void {
  try {
    decode(payload);
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    assert.equal(typeof e.errno, 'number');
  }
}

describe('decoders throw nothing but ProtocolError', () => {
  for (const [name, decode] of decoders) {
    test(name, () => {
      const input = fc.oneof(bytes(96), mutated);
      fc.assert(fc.property(input, (payload) => onlyProtocolErrors(decode, payload)), { seed: SEED, numRuns: 1000 });
    });
  }
});
