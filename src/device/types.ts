/**
 * The types every device callback shares, at the bottom of src/device: the
 * spec, the register tables, migration hooks and the machinery the Device
 * class is built from import them without importing each other in a circle.
 */

/** A value a read callback may return: bytes, or a little-endian integer. */
export type ReadResult = Uint8Array | number | bigint;

/** Something sync or async. */
export type MaybePromise<T> = T | Promise<T>;

/*
 * The device every callback receives. It is the Device class: device.ts
 * completes this declaration (`interface Device extends` the class), so the
 * spec types, which the class is built from, need not import the class.
 * A forward declaration, as C declares a struct ahead of its definition.
 */
export interface Device {}
