/** A bare connection, for checks that must speak before (or instead of) VERSION. */
import { Channel, closeAll } from '../../transport/channel.js';
import type { RawOutcome } from './types.js';

/**
 * Sends `messages` on the connected `fd` (one sendmsg each), collects
 * messages until `want` arrived, the server closed, or `timeoutMs` passed,
 * and closes the fd.
 */
export function exchange(fd: number, messages: Buffer[], want: number, timeoutMs: number): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const outcome: RawOutcome = { replies: [], closed: false };
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      channel.close();
      resolve(outcome);
    };
    const channel: Channel = new Channel(fd, {
      onFrame(frame) {
        closeAll(frame.fds);
        outcome.replies.push(Buffer.from(frame.bytes));
        if (outcome.replies.length >= want) finish();
      },
      onClose() {
        if (!done) outcome.closed = true;
        finish();
      },
    });
    const timer = setTimeout(finish, timeoutMs);
    for (const m of messages) channel.send(m);
  });
}
