/**
 * MaybePromise helpers for the controller's data path: a step that finishes
 * at once returns its value, one that must wait returns a Promise, and the
 * next step runs synchronously in the first case (no Promise, no closure
 * kept) and on settlement in the second.
 */
import type { MaybePromise } from '../device/spec.js';

/** Applies `f` now if `v` is a value, or when it settles if it is a Promise. */
export function then<T, U>(v: MaybePromise<T>, f: (x: T) => MaybePromise<U>): MaybePromise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}
