/**
 * What `require('muser')` gives a CommonJS device file outside a project
 * that depends on muser (tsx runs `.ts` files as CommonJS outside a
 * `"type": "module"` package): the running muser's own module, which
 * load.ts put on globalThis before importing the file. The same instance,
 * not a second copy: `instanceof Device` and muser's bookkeeping of
 * listening servers hold.
 */
const running = (globalThis as unknown as Record<symbol, Record<string, unknown> | undefined>)[Symbol.for('muser.running')];
if (!running) throw new Error("'muser' is resolved to the running muser only for device files that `muser run` loads");
export = running;
