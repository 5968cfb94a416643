import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MigrationFlag, MigrationState as S } from '../src/protocol/constants.js';
import { ALL_STATES, arcs, capsOf, isArc, isSupported, migrationFlags, path, type MigrationCaps } from '../src/migration/fsm.js';

/**
 * The next step for every (current, requested) pair when every state is
 * supported, as <linux/vfio.h> defines it (vfio_mig_get_next_state). ERROR
 * means "refused". Written out independently of the BFS under test.
 */
const { ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } = S;
const NEXT: Record<number, Record<number, S>> = {
  [STOP]: { [STOP]: STOP, [RUNNING]: RUNNING_P2P, [PRE_COPY]: RUNNING_P2P, [PRE_COPY_P2P]: RUNNING_P2P, [STOP_COPY]: STOP_COPY, [RESUMING]: RESUMING, [RUNNING_P2P]: RUNNING_P2P },
  [RUNNING]: { [STOP]: RUNNING_P2P, [RUNNING]: RUNNING, [PRE_COPY]: PRE_COPY, [PRE_COPY_P2P]: RUNNING_P2P, [STOP_COPY]: RUNNING_P2P, [RESUMING]: RUNNING_P2P, [RUNNING_P2P]: RUNNING_P2P },
  [PRE_COPY]: { [STOP]: RUNNING, [RUNNING]: RUNNING, [PRE_COPY]: PRE_COPY, [PRE_COPY_P2P]: PRE_COPY_P2P, [STOP_COPY]: PRE_COPY_P2P, [RESUMING]: RUNNING, [RUNNING_P2P]: RUNNING },
  [PRE_COPY_P2P]: { [STOP]: RUNNING_P2P, [RUNNING]: RUNNING_P2P, [PRE_COPY]: PRE_COPY, [PRE_COPY_P2P]: PRE_COPY_P2P, [STOP_COPY]: STOP_COPY, [RESUMING]: RUNNING_P2P, [RUNNING_P2P]: RUNNING_P2P },
  [STOP_COPY]: { [STOP]: STOP, [RUNNING]: STOP, [PRE_COPY]: ERROR, [PRE_COPY_P2P]: ERROR, [STOP_COPY]: STOP_COPY, [RESUMING]: STOP, [RUNNING_P2P]: STOP },
  [RESUMING]: { [STOP]: STOP, [RUNNING]: STOP, [PRE_COPY]: STOP, [PRE_COPY_P2P]: STOP, [STOP_COPY]: STOP, [RESUMING]: RESUMING, [RUNNING_P2P]: STOP },
  [RUNNING_P2P]: { [STOP]: STOP, [RUNNING]: RUNNING, [PRE_COPY]: RUNNING, [PRE_COPY_P2P]: PRE_COPY_P2P, [STOP_COPY]: STOP, [RESUMING]: STOP, [RUNNING_P2P]: RUNNING_P2P },
};

/** The kernel's algorithm: follow the table, skipping states the device lacks. */
function kernelPath(from: S, to: S, caps: MigrationCaps): S[] | undefined {
  if (!isSupported(from, caps) || !isSupported(to, caps) || from === ERROR || to === ERROR) return undefined;
  const out: S[] = [];
  let cur = from;
  while (cur !== to) {
    let next = NEXT[cur]![to]!;
    while (next !== ERROR && !isSupported(next, caps)) next = NEXT[next]![to]!;
    if (next === ERROR) return undefined;
    out.push(next);
    cur = next;
  }
  return out;
}

const ALL_CAPS: MigrationCaps[] = [
  { preCopy: false, p2p: false },
  { preCopy: true, p2p: false },
  { preCopy: false, p2p: true },
  { preCopy: true, p2p: true },
];

describe('migration state machine', () => {
  it('matches the kernel next-state table for every pair and every feature set', () => {
    for (const caps of ALL_CAPS) {
      for (const from of ALL_STATES) {
        for (const to of ALL_STATES) {
          assert.deepEqual(path(from, to, caps), kernelPath(from, to, caps), `${S[from]} -> ${S[to]} with ${JSON.stringify(caps)}`);
        }
      }
    }
  });

  it('every step of every path is a single arc', () => {
    for (const caps of ALL_CAPS) {
      for (const from of ALL_STATES) {
        for (const to of ALL_STATES) {
          const p = path(from, to, caps);
          if (!p) continue;
          let cur = from;
          for (const s of p) {
            assert.ok(isArc(cur, s, caps), `${S[cur]} -> ${S[s]}`);
            cur = s;
          }
        }
      }
    }
  });

  it('without P2P and PRE_COPY has exactly the vfio-user arcs', () => {
    const plain = arcs({ preCopy: false, p2p: false }).map(([a, b]) => `${S[a]}>${S[b]}`).sort();
    assert.deepEqual(plain, ['RESUMING>STOP', 'RUNNING>STOP', 'STOP>RESUMING', 'STOP>RUNNING', 'STOP>STOP_COPY', 'STOP_COPY>STOP'].sort());
    const pre = arcs({ preCopy: true, p2p: false }).length;
    assert.equal(pre, 9);
    assert.equal(arcs({ preCopy: true, p2p: true }).length, 15);
  });

  it('takes the documented multi-step paths', () => {
    const c = { preCopy: false, p2p: false };
    assert.deepEqual(path(RUNNING, STOP_COPY, c), [STOP, STOP_COPY]);
    assert.deepEqual(path(RUNNING, RESUMING, c), [STOP, RESUMING]);
    assert.deepEqual(path(RESUMING, RUNNING, c), [STOP, RUNNING]);
    assert.deepEqual(path(STOP_COPY, RUNNING, c), [STOP, RUNNING]);
    const full = { preCopy: true, p2p: true };
    assert.deepEqual(path(RUNNING, STOP_COPY, full), [RUNNING_P2P, STOP, STOP_COPY]);
    assert.deepEqual(path(PRE_COPY, STOP, full), [RUNNING, RUNNING_P2P, STOP]);
    assert.deepEqual(path(PRE_COPY, STOP_COPY, full), [PRE_COPY_P2P, STOP_COPY]);
    assert.deepEqual(path(PRE_COPY, STOP_COPY, { preCopy: true, p2p: false }), [STOP_COPY]);
  });

  it('refuses ERROR, unknown and unsupported states and STOP_COPY -> PRE_COPY', () => {
    const full = { preCopy: true, p2p: true };
    assert.equal(path(RUNNING, ERROR, full), undefined);
    assert.equal(path(ERROR, RUNNING, full), undefined);
    assert.equal(path(RUNNING, 8, full), undefined);
    assert.equal(path(RUNNING, 0xabcd, full), undefined);
    assert.equal(path(STOP_COPY, PRE_COPY, full), undefined);
    assert.equal(path(STOP_COPY, PRE_COPY_P2P, full), undefined);
    assert.equal(path(RUNNING, PRE_COPY, { preCopy: false, p2p: true }), undefined);
    assert.equal(path(RUNNING, RUNNING_P2P, { preCopy: true, p2p: false }), undefined);
    assert.deepEqual(path(RUNNING, RUNNING, full), []);
  });

  it('converts between caps and VFIO_MIGRATION flags', () => {
    for (const caps of ALL_CAPS) assert.deepEqual(capsOf(migrationFlags(caps)), caps);
    assert.equal(migrationFlags({ preCopy: true, p2p: true }), MigrationFlag.STOP_COPY | MigrationFlag.P2P | MigrationFlag.PRE_COPY);
  });
});
