/**
 * One wording for a value that failed a check, whichever check refused it:
 * serve() and listen options, the DeviceSpec, register tables and timers all
 * show the wrong value through values/describe.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Device, defineRegisters, deviceTimer, serve, type DeviceSpec } from '../src/index.js';
import { describeValue } from '../src/values/describe.js';

/** The message of what `f` throws. */
function messageOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail('nothing was thrown');
}

describe('describeValue', () => {
  test('each kind of value', () => {
    const cases: [unknown, string][] = [
      ['600', "'600'"],
      ['x'.repeat(100), `'${'x'.repeat(64)}...'`],
      [600, '600'],
      [NaN, 'NaN'],
      [5n, '5n'],
      [true, 'true'],
      [undefined, 'undefined'],
      [null, 'null'],
      [Symbol('s'), 'Symbol(s)'],
      [[1, 2], 'an array'],
      [{ secret: 'hunter2' }, 'an object'],
      [() => 'source code', 'a function'],
    ];
    for (const [v, want] of cases) assert.equal(describeValue(v), want);
  });
});

describe('every check shows a wrong value the same way', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-describe-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const identity = { vendorId: 0x1234, deviceId: 0x0001 };
  const spec: DeviceSpec = { identity, bars: { 0: { size: 4096 } } };

  test('a string where a boolean belongs: serve() options and the DeviceSpec agree', () => {
    const fromServe = messageOf(() => serve(spec, join(dir, 'a.sock'), { replaceStale: 'yes' as never }));
    const fromSpec = messageOf(() => new Device({ ...spec, requireBusMaster: 'yes' } as never));
    assert.match(fromServe, /options\.replaceStale must be a boolean, got 'yes'$/);
    assert.match(fromSpec, /requireBusMaster: must be a boolean, got 'yes'$/);
  });

  test("a function given as an option is named as one, not printed as its source", () => {
    const message = messageOf(() => serve(spec, join(dir, 'b.sock'), { backlog: (() => 'source code') as never }));
    assert.match(message, /options\.backlog must be an integer, got a function$/);
  });

  test('register tables and timers use the same wording', () => {
    assert.match(messageOf(() => defineRegisters(['ctrl'] as never)), /register table entry 0: must be an object, got 'ctrl'$/);
    assert.match(messageOf(() => defineRegisters([{ name: 'w', offset: 0, size: 8, window: 1, write() {} }] as never)), /window must be true \(or left out\), got 1$/);
    assert.match(messageOf(() => defineRegisters([{ name: 'r', offset: 0, width: 4, reset: '1' }] as never)), /reset must be a number, got '1'$/);
    const timer = deviceTimer({ name: 'tick', onExpire() {} });
    assert.match(messageOf(() => timer.start('5' as never)), /tick\.start: ms must be a finite number of milliseconds >= 0, got '5'$/);
  });
});
