/**
 * vfio-user protocol codec: pure encode/decode of every message, both
 * directions, no I/O. Payload = the bytes after the 16-byte header.
 * Decoders throw only {@link ProtocolError}.
 */
export * from './constants.js';
export * from './errors.js';
export * from './header.js';
export * from './version.js';
export * from './dma.js';
export * from './device-info.js';
export * from './region-info.js';
export * from './region-io-fds.js';
export * from './irq.js';
export * from './region-access.js';
export * from './dma-access.js';
export * from './device-reset.js';
export * from './region-write-multi.js';
export * from './device-feature.js';
export * from './migration-data.js';
export * from './codecs.js';
