/**
 * The VFIO migration v2 state machine, pure: which states a device offers,
 * which single arcs exist between them, and the path a multi-step request
 * takes. No I/O and no device here; the migration module performs the arcs.
 *
 * The arcs are those of `<linux/vfio.h>` (`enum vfio_device_mig_state`):
 *
 *   RUNNING_P2P -> STOP, STOP_COPY -> STOP, RESUMING -> STOP,
 *   PRE_COPY -> RUNNING, RUNNING_P2P -> RUNNING,
 *   PRE_COPY_P2P -> RUNNING_P2P, RUNNING -> RUNNING_P2P, STOP -> RUNNING_P2P,
 *   RUNNING -> PRE_COPY, RUNNING_P2P -> PRE_COPY_P2P, STOP -> STOP_COPY,
 *   PRE_COPY -> PRE_COPY_P2P, PRE_COPY_P2P -> PRE_COPY,
 *   PRE_COPY_P2P -> STOP_COPY, STOP -> RESUMING.
 *
 * Without P2P the P2P states drop out and the arcs through them close up:
 * RUNNING -> STOP, STOP -> RUNNING, PRE_COPY -> STOP_COPY (the arcs the
 * vfio-user spec lists). Without PRE_COPY, arcs touching PRE_COPY and
 * PRE_COPY_P2P are removed. Any other request is a combination of arcs: the
 * shortest path with no saving-group state (PRE_COPY, PRE_COPY_P2P,
 * STOP_COPY) inside it, except that a path from one saving state to another
 * stays inside the group (PRE_COPY -> PRE_COPY_P2P -> STOP_COPY), as the
 * kernel's vfio_mig_get_next_state() does. STOP_COPY -> PRE_COPY(_P2P) is
 * not permitted at all, and ERROR can never be requested.
 */
import { MigrationFlag, MigrationState as S } from '../protocol/constants.js';

export { MigrationState } from '../protocol/constants.js';

/** Optional parts of the state machine a device offers. */
export interface MigrationCaps {
  /** PRE_COPY (and, with p2p, PRE_COPY_P2P). */
  preCopy: boolean;
  /** RUNNING_P2P (and, with preCopy, PRE_COPY_P2P). */
  p2p: boolean;
}

/** Every state, by number (0..7). */
export const ALL_STATES: readonly S[] = [S.ERROR, S.STOP, S.RUNNING, S.STOP_COPY, S.RESUMING, S.RUNNING_P2P, S.PRE_COPY, S.PRE_COPY_P2P];

const P2P_ARCS: readonly (readonly [S, S])[] = [
  [S.RUNNING_P2P, S.STOP],
  [S.STOP_COPY, S.STOP],
  [S.RESUMING, S.STOP],
  [S.PRE_COPY, S.RUNNING],
  [S.RUNNING_P2P, S.RUNNING],
  [S.PRE_COPY_P2P, S.RUNNING_P2P],
  [S.RUNNING, S.RUNNING_P2P],
  [S.STOP, S.RUNNING_P2P],
  [S.RUNNING, S.PRE_COPY],
  [S.RUNNING_P2P, S.PRE_COPY_P2P],
  [S.STOP, S.STOP_COPY],
  [S.PRE_COPY, S.PRE_COPY_P2P],
  [S.PRE_COPY_P2P, S.PRE_COPY],
  [S.PRE_COPY_P2P, S.STOP_COPY],
  [S.STOP, S.RESUMING],
];

const PLAIN_ARCS: readonly (readonly [S, S])[] = [
  [S.RUNNING, S.STOP],
  [S.STOP_COPY, S.STOP],
  [S.RESUMING, S.STOP],
  [S.PRE_COPY, S.RUNNING],
  [S.STOP, S.RUNNING],
  [S.RUNNING, S.PRE_COPY],
  [S.STOP, S.STOP_COPY],
  [S.PRE_COPY, S.STOP_COPY],
  [S.STOP, S.RESUMING],
];

/** The saving group: states that stream data out. */
export function isSaving(s: S): boolean {
  return s === S.PRE_COPY || s === S.PRE_COPY_P2P || s === S.STOP_COPY;
}

/** States with a P2P quiescent behaviour. */
export function isP2p(s: S): boolean {
  return s === S.RUNNING_P2P || s === S.PRE_COPY_P2P;
}

/** States in which the device operates: it may raise interrupts. */
export function mayInterrupt(s: S): boolean {
  return s === S.RUNNING || s === S.PRE_COPY || isP2p(s);
}

/**
 * States in which the device may do DMA. P2P states stop all DMA: the
 * device cannot tell DMA to a peer from DMA to memory.
 */
export function mayDma(s: S): boolean {
  return s === S.RUNNING || s === S.PRE_COPY;
}

/** The VFIO_MIGRATION_* flags describing `caps` (STOP_COPY is always set). */
export function migrationFlags(caps: MigrationCaps): number {
  return MigrationFlag.STOP_COPY | (caps.p2p ? MigrationFlag.P2P : 0) | (caps.preCopy ? MigrationFlag.PRE_COPY : 0);
}

/** The caps described by VFIO_MIGRATION_* flags. */
export function capsOf(flags: number): MigrationCaps {
  return { preCopy: (flags & MigrationFlag.PRE_COPY) !== 0, p2p: (flags & MigrationFlag.P2P) !== 0 };
}

/** True when a device with `caps` has state `s` (ERROR counts: it can be entered, never requested). */
export function isSupported(s: number, caps: MigrationCaps): boolean {
  switch (s) {
    case S.ERROR:
    case S.STOP:
    case S.RUNNING:
    case S.STOP_COPY:
    case S.RESUMING:
      return true;
    case S.RUNNING_P2P:
      return caps.p2p;
    case S.PRE_COPY:
      return caps.preCopy;
    case S.PRE_COPY_P2P:
      return caps.p2p && caps.preCopy;
    default:
      return false;
  }
}

/** The single arcs of a device with `caps`, as [from, to] pairs. */
export function arcs(caps: MigrationCaps): (readonly [S, S])[] {
  const all = caps.p2p ? P2P_ARCS : PLAIN_ARCS;
  return all.filter(([a, b]) => isSupported(a, caps) && isSupported(b, caps));
}

/** True when from -> to is a single arc. */
export function isArc(from: S, to: S, caps: MigrationCaps): boolean {
  return arcs(caps).some(([a, b]) => a === from && b === to);
}

/**
 * The states a request from `from` to `to` passes through, `to` included
 * (empty when from === to), or undefined when the request is not allowed:
 * unknown or unsupported states, ERROR on either end, STOP_COPY to a
 * PRE_COPY state, or no path.
 */
export function path(from: number, to: number, caps: MigrationCaps): S[] | undefined {
  if (!isSupported(from, caps) || !isSupported(to, caps)) return undefined;
  if (from === S.ERROR || to === S.ERROR) return undefined;
  if (from === to) return [];
  if (from === S.STOP_COPY && (to === S.PRE_COPY || to === S.PRE_COPY_P2P)) return undefined;
  const next = new Map<S, S[]>();
  for (const [a, b] of arcs(caps)) next.set(a, [...(next.get(a) ?? []), b]);
  // Breadth-first from `from`. A path either stays inside the saving group
  // (both ends saving: the data session carries on) or has no saving state
  // inside it (no data session is opened and closed on the way).
  const inside = isSaving(from as S) && isSaving(to as S);
  const back = new Map<S, S>();
  const queue: S[] = [from as S];
  const seen = new Set<S>([from as S]);
  while (queue.length > 0) {
    const cur = queue.shift()!;
    if (cur === to) break;
    if (cur !== from && isSaving(cur) !== inside) continue;
    for (const n of next.get(cur) ?? []) {
      if (seen.has(n)) continue;
      seen.add(n);
      back.set(n, cur);
      queue.push(n);
    }
  }
  if (!back.has(to as S)) return undefined;
  const out: S[] = [];
  for (let s = to as S; s !== from; s = back.get(s)!) out.unshift(s);
  return out;
}

/** Human-readable state name. */
export function stateName(s: number): string {
  return S[s] ?? `state ${s}`;
}
