/** NBD URIs: the standard forms parse, everything else is refused with a clear error. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatNbdAddress, NbdUriError, parseNbdUri } from '../src/index.js';

test('nbd:// gives host, port (10809 by default) and export name', () => {
  assert.deepEqual(parseNbdUri('nbd://127.0.0.1:10810/disk'), { transport: 'tcp', host: '127.0.0.1', port: 10810, exportName: 'disk' });
  assert.deepEqual(parseNbdUri('nbd://example.org'), { transport: 'tcp', host: 'example.org', port: 10809, exportName: '' });
  assert.deepEqual(parseNbdUri('nbd://[::1]:99/a%20b'), { transport: 'tcp', host: '::1', port: 99, exportName: 'a b' });
});

test('nbd+unix:// gives the socket path and export name', () => {
  assert.deepEqual(parseNbdUri('nbd+unix:///vol?socket=/run/nbd.sock'), { transport: 'unix', socketPath: '/run/nbd.sock', exportName: 'vol' });
  assert.deepEqual(parseNbdUri('nbd+unix://?socket=/tmp/s'), { transport: 'unix', socketPath: '/tmp/s', exportName: '' });
});

test('addresses format back to URIs that parse to the same address', () => {
  for (const uri of ['nbd://127.0.0.1:10810/disk', 'nbd://[::1]:99/a%20b', 'nbd+unix:///vol?socket=/run/nbd.sock']) {
    const a = parseNbdUri(uri);
    assert.deepEqual(parseNbdUri(formatNbdAddress(a)), a);
  }
});

test('other schemes, TLS schemes, missing sockets and bad ports are refused', () => {
  const cases: [string, RegExp][] = [
    ['http://host/x', /scheme/],
    ['nbds://host/x', /TLS/],
    ['nbds+unix:///x?socket=/s', /TLS/],
    ['nbd+unix:///x', /socket=/],
    ['nbd+unix://host/x?socket=/s', /no host/],
    ['nbd://host:0/x', /port/],
    ['nbd://host/x?socket=/s', /query/],
    ['nbd://user@host/x', /user/],
    ['not a uri', /not a URI/],
  ];
  for (const [uri, why] of cases) {
    assert.throws(() => parseNbdUri(uri), (e: unknown) => e instanceof NbdUriError && why.test(e.message), uri);
  }
});
