/**
 * VFIO_USER_VERSION (command 1), same layout both ways:
 * u16 major, u16 minor, then optional UTF-8 JSON terminated by NUL:
 * `{"capabilities":{...}}`.
 *
 * Decoding rules: a payload of exactly 4 bytes (no JSON) gives empty
 * capabilities. Otherwise the last byte must be the only NUL, the text must
 * be valid UTF-8 and JSON whose top level is an object; `capabilities`, if
 * present, must be an object. Known keys must have the right type (numbers
 * must be non-negative safe integers, except `pgsizes`, a bitmask, which may
 * be any non-negative integer-valued number because servers may report high
 * page-size bits); unknown keys are ignored. All faults are EINVAL, except
 * JSON longer than {@link MAX_VERSION_JSON} bytes which is E2BIG.
 */
import { Errno, MAX_VERSION_JSON } from './constants.js';
import { ProtocolError, invalid } from './errors.js';
import { defineMessage } from './wire.js';

/** Twin-socket negotiation (`twin_socket`). */
export interface TwinSocketCapability {
  /** `supported` */
  supported?: boolean;
  /** `fd_index`: index of the socket fd in the reply's fds (reply only). */
  fdIndex?: number;
}

/** Legacy `migration` object QEMU still sends. */
export interface MigrationCapability {
  /** `pgsize` */
  pgsize?: number;
  /** `max_bitmap_size` */
  maxBitmapSize?: number;
}

/** The `capabilities` object; JSON names in the field docs. */
export interface VersionCapabilities {
  /** `max_msg_fds` (default 1). */
  maxMsgFds?: number;
  /** `max_data_xfer_size` (default 1 MiB). */
  maxDataXferSize?: number;
  /** `max_dma_maps` (default 65535). */
  maxDmaMaps?: number;
  /** `pgsizes` bitmask (default 4096). */
  pgsizes?: number;
  /** `twin_socket` */
  twinSocket?: TwinSocketCapability;
  /** `write_multiple` */
  writeMultiple?: boolean;
  /** `migration` */
  migration?: MigrationCapability;
}

/** A VERSION request or reply. */
export interface Version {
  major: number;
  minor: number;
  capabilities: VersionCapabilities;
}

type Json = Record<string, unknown>;

const HEAD = defineMessage<Omit<Version, 'capabilities'>>('VERSION', { major: 'u16', minor: 'u16' });

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Encodes a VERSION payload; the JSON always carries a `capabilities` object. */
export function encodeVersion(m: Version): Buffer {
  const json = JSON.stringify({ capabilities: capabilitiesToJson(m.capabilities) });
  const text = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(HEAD.size + text.length + 1);
  HEAD.write(out, 0, m);
  text.copy(out, HEAD.size);
  return out;
}

/** Decodes a VERSION payload (see the module rules). */
export function decodeVersion(payload: Buffer): Version {
  const { major, minor } = HEAD.decode(payload, 'VERSION');
  if (payload.length === HEAD.size) {
    return { major, minor, capabilities: {} };
  }
  const root = parseJsonObject(payload.subarray(HEAD.size));
  const caps = root['capabilities'];
  if (caps === undefined) {
    return { major, minor, capabilities: {} };
  }
  return { major, minor, capabilities: capabilitiesFromJson(asObject(caps, 'capabilities')) };
}

/** Same layout both ways: aliases for symmetry with the other families. */
export const encodeVersionRequest = encodeVersion;
/** @see decodeVersion */
export const decodeVersionRequest = decodeVersion;
/** @see encodeVersion */
export const encodeVersionReply = encodeVersion;
/** @see decodeVersion */
export const decodeVersionReply = decodeVersion;

function parseJsonObject(data: Buffer): Json {
  const textLen = data.length - 1;
  if (textLen > MAX_VERSION_JSON) {
    throw new ProtocolError(Errno.E2BIG, `VERSION JSON of ${textLen} bytes exceeds ${MAX_VERSION_JSON}`);
  }
  if (data[textLen] !== 0 || data.indexOf(0) !== textLen) {
    invalid('VERSION JSON must end with its only NUL');
  }
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(data.subarray(0, textLen)));
  } catch {
    invalid('VERSION data is not valid UTF-8 JSON');
  }
  return asObject(value, 'VERSION JSON');
}

function asObject(value: unknown, what: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    invalid(`${what} must be a JSON object`);
  }
  return value as Json;
}

function capabilitiesFromJson(j: Json): VersionCapabilities {
  const c: VersionCapabilities = {};
  setIfDefined(c, 'maxMsgFds', safeUint(j, 'max_msg_fds'));
  setIfDefined(c, 'maxDataXferSize', safeUint(j, 'max_data_xfer_size'));
  setIfDefined(c, 'maxDmaMaps', safeUint(j, 'max_dma_maps'));
  setIfDefined(c, 'pgsizes', bitmask(j, 'pgsizes'));
  setIfDefined(c, 'writeMultiple', bool(j, 'write_multiple'));
  if (j['twin_socket'] !== undefined) {
    c.twinSocket = twinFromJson(asObject(j['twin_socket'], 'twin_socket'));
  }
  if (j['migration'] !== undefined) {
    c.migration = migrationFromJson(asObject(j['migration'], 'migration'));
  }
  return c;
}

function twinFromJson(j: Json): TwinSocketCapability {
  const t: TwinSocketCapability = {};
  setIfDefined(t, 'supported', bool(j, 'supported'));
  setIfDefined(t, 'fdIndex', safeUint(j, 'fd_index'));
  return t;
}

function migrationFromJson(j: Json): MigrationCapability {
  const m: MigrationCapability = {};
  setIfDefined(m, 'pgsize', safeUint(j, 'pgsize'));
  setIfDefined(m, 'maxBitmapSize', safeUint(j, 'max_bitmap_size'));
  return m;
}

function capabilitiesToJson(c: VersionCapabilities): Json {
  const j: Json = {};
  setIfDefined(j, 'max_msg_fds', c.maxMsgFds);
  setIfDefined(j, 'max_data_xfer_size', c.maxDataXferSize);
  setIfDefined(j, 'max_dma_maps', c.maxDmaMaps);
  setIfDefined(j, 'pgsizes', c.pgsizes);
  setIfDefined(j, 'write_multiple', c.writeMultiple);
  if (c.twinSocket !== undefined) {
    const t: Json = {};
    setIfDefined(t, 'supported', c.twinSocket.supported);
    setIfDefined(t, 'fd_index', c.twinSocket.fdIndex);
    j['twin_socket'] = t;
  }
  if (c.migration !== undefined) {
    const m: Json = {};
    setIfDefined(m, 'pgsize', c.migration.pgsize);
    setIfDefined(m, 'max_bitmap_size', c.migration.maxBitmapSize);
    j['migration'] = m;
  }
  return j;
}

function setIfDefined<T extends object, K extends keyof T>(o: T, key: K, value: T[K] | undefined): void {
  if (value !== undefined) {
    o[key] = value;
  }
}

/** `j[key]`: undefined when absent, EINVAL naming the capability unless `valid`. */
function optional<V>(j: Json, key: string, valid: (v: unknown) => v is V, what: string): V | undefined {
  const v = j[key];
  if (v === undefined) return undefined;
  if (!valid(v)) invalid(`capability ${key} must be ${what}`);
  return v;
}

const isSafeUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
/** A bitmask may use bits above 2^53 (pgsizes), as a double holds them. */
const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';

const safeUint = (j: Json, key: string): number | undefined => optional(j, key, isSafeUint, 'a non-negative integer');
const bitmask = (j: Json, key: string): number | undefined => optional(j, key, isUint, 'a non-negative integer');
const bool = (j: Json, key: string): boolean | undefined => optional(j, key, isBoolean, 'a boolean');
