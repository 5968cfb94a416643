/**
 * The integration round trips (integration.test.ts) again, with every
 * child-process server in polling mode (ServeOptions.poll): busy polling
 * must not change a single answer.
 */
process.env.MUSER_TEST_POLL = '1';
await import('./integration.test.js');
