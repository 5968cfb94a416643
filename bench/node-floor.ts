/**
 * The floor of Node itself for a busy-polled request/reply loop: an echo
 * server on the muser addon with no muser code. It listens at SOCKET,
 * busy-polls each connection as `muser run --poll` does (pollStart with a
 * receive buffer, pollSpin with a 1 ms window), and answers every
 * `--size-req` bytes with a canned `--size-rep`-byte reply through
 * native.sendmsg: one JS callback and one sendmsg per message, nothing
 * else. Drive it with `pingpong --connect SOCKET` (same sizes):
 *
 *   taskset -c 1 node dist/bench/node-floor.js /tmp/f.sock &
 *   bench/bin/pingpong --connect /tmp/f.sock --size-req 32 --size-rep 36 --cpu 0
 *
 * Runs until killed.
 */
import { native, PollEvent, PollMode } from '../src/native/index.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}

const path = process.argv[2];
if (!path || path.startsWith('--')) {
  process.stderr.write('usage: node dist/bench/node-floor.js SOCKET [--size-req 32] [--size-rep 36]\n');
  process.exit(2);
}
const sizeReq = arg('--size-req', 32);
const reply = Buffer.alloc(arg('--size-rep', 36));
const listener = native.listen(path, 16, 0o600);

native.pollStart(listener, PollMode.Readable, () => {
  const fd = native.accept(listener);
  if (fd < 0) return;
  const recv = Buffer.allocUnsafeSlow(64 * 1024);
  let pending = 0;
  const poll = native.pollStart(
    fd,
    PollMode.Stream,
    (kind, a) => {
      if (kind !== PollEvent.Data) {
        native.pollStop(poll);
        native.close(fd);
        return;
      }
      // Requests are answered as whole ones arrive; one read may hold several or part of one.
      pending += a as number;
      while (pending >= sizeReq) {
        pending -= sizeReq;
        native.sendmsg(fd, reply);
      }
    },
    recv,
  );
  native.pollSpin(poll, 1_000_000);
});
process.stderr.write(`node floor: serving ${path}\n`);
