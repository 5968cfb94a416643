/** `require('muser/client')` for a CommonJS device file outside a project: see running-muser.cts. */
const running = (globalThis as unknown as Record<symbol, Record<string, unknown> | undefined>)[Symbol.for('muser.running/client')];
if (!running) throw new Error("'muser/client' is resolved to the running muser only for device files that `muser run` loads");
export = running;
