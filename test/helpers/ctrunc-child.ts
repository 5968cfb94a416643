/**
 * Child process of native-args.test.ts, started under a small fd limit
 * (`ulimit -n`). Provokes MSG_CTRUNC: fills its fd table but for FREE
 * slots, then receives a message carrying more fds than that over a
 * Channel; the kernel installs FREE of them and drops the rest. Prints, as
 * JSON, what the Channel made of it and how many of the passed fds are
 * still open afterwards.
 */
import { openSync, readdirSync, readlinkSync } from 'node:fs';
import { native } from '../../src/native/index.js';
import { Channel, closeAll } from '../../src/transport/channel.js';
import { encodeMessage } from '../../src/protocol/header.js';
import { Command } from '../../src/protocol/constants.js';

const FREE = 3;
const SENT = 10;
const NAME = `muser-ctrunc-${process.pid}`;

/** Open fds of this process that point at the passed memfd. */
function passedStillOpen(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith(`/memfd:${NAME}`)) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}

const [a, b] = native.socketpair();
const passed = native.memfd(NAME, 0);
const filler: number[] = [];
const result: { frames: number; frameFds: number; closeReason?: string; stillOpen?: number } = { frames: 0, frameFds: 0 };

const finish = (): void => {
  for (const fd of filler.splice(0)) native.close(fd);
  native.close(b);
  native.close(passed);
  result.stillOpen = passedStillOpen();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
};

new Channel(a, {
  onFrame: (f) => {
    result.frames++;
    result.frameFds += f.fds.length;
    closeAll(f.fds);
  },
  onClose: (e) => {
    result.closeReason = e?.message ?? 'peer closed';
    finish();
  },
});

// Fill the table, then free FREE slots for the message's fds.
for (;;) {
  try {
    filler.push(openSync('/dev/null', 'r'));
  } catch {
    break;
  }
}
for (let i = 0; i < FREE; i++) native.close(filler.pop()!);
const msg = encodeMessage({ msgId: 1, command: Command.DEVICE_GET_INFO }, Buffer.alloc(16));
const sent = native.sendmsg(b, msg, Array.from({ length: SENT }, () => passed));
if (sent !== msg.length) throw new Error(`sendmsg: ${sent}`);
// Without MSG_CTRUNC handling the channel stays open: report that.
setTimeout(() => {
  result.closeReason = 'still open';
  finish();
}, 2000);
