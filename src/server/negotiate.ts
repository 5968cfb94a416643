/**
 * VERSION negotiation: check the client's version, take the smaller of
 * each limit, and answer with what this server supports (the `migration`
 * capability only when the device is offered for live migration).
 */
import { decodeVersion, encodeVersion } from '../protocol/version.js';
import { DeviceError, Errno } from '../device/errors.js';
import type { Reply, Request, SessionContext as Session } from './context.js';

/** Protocol version this server speaks. */
export const PROTOCOL_MAJOR = 0;
export const PROTOCOL_MINOR = 1;

/** Handles VERSION; a second VERSION on the same connection is refused. */
export function negotiate(s: Session, req: Request): Reply {
  if (s.negotiated) throw new DeviceError(Errno.EINVAL, 'VERSION already negotiated');
  const v = decodeVersion(req.payload);
  if (v.major !== PROTOCOL_MAJOR) throw new DeviceError(Errno.ENOTSUP, `protocol major ${v.major} not supported`);
  const c = v.capabilities;
  const pageSize = c.pgsizes === undefined ? s.limits.pgsizes : lowestPage(c.pgsizes & s.limits.pgsizes);
  if (pageSize === 0) throw new DeviceError(Errno.EINVAL, `no common page size in 0x${(c.pgsizes ?? 0).toString(16)}`);
  if (c.maxDataXferSize !== undefined && c.maxDataXferSize < 1) throw new DeviceError(Errno.EINVAL, 'max_data_xfer_size must be at least 1');
  s.negotiated = {
    maxMsgFds: Math.min(c.maxMsgFds ?? 1, s.limits.maxMsgFds),
    clientMaxDataXferSize: Math.min(c.maxDataXferSize ?? 1024 * 1024, 64 * 1024 * 1024),
    pageSize,
    writeMultiple: c.writeMultiple === true,
  };
  s.dmaTable.setPageSize(pageSize);
  const payload = encodeVersion({
    major: PROTOCOL_MAJOR,
    minor: Math.min(v.minor, PROTOCOL_MINOR),
    capabilities: {
      maxMsgFds: s.limits.maxMsgFds,
      maxDataXferSize: s.limits.maxDataXferSize,
      maxDmaMaps: s.limits.maxDmaMaps,
      pgsizes: pageSize,
      writeMultiple: true,
      // Only a device DEVICE_FEATURE will offer for migration says so here:
      // a client plans a migration from this object alone.
      ...(s.migration.migration ? { migration: { pgsize: pageSize, maxBitmapSize: s.limits.maxDataXferSize * 8 } } : {}),
    },
  });
  return { payload, after: () => s.onNegotiated() };
}

function lowestPage(mask: number): number {
  for (let bit = 12; bit < 31; bit++) if (mask & (1 << bit)) return 1 << bit;
  return 0;
}
