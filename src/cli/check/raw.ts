/** A bare connection for checks that must speak before (or instead of) VERSION. */
import { Channel } from '../../transport/channel.js';
import { connectSocket } from '../../transport/listener.js';
import { closeAll } from '../../transport/channel.js';

/** What came back on a raw connection. */
export interface RawOutcome {
  /** Whole messages received, header included. */
  replies: Buffer[];
  /** The server closed the connection. */
  closed: boolean;
}

/**
 * Connects, sends `messages` (one sendmsg each), and collects messages
 * until `want` arrived, the server closed, or `timeoutMs` passed.
 */
export function rawExchange(path: string, messages: Buffer[], want: number, timeoutMs: number): Promise<RawOutcome> {
  return new Promise((resolve, reject) => {
    let fd: number;
    try {
      fd = connectSocket(path);
    } catch (e) {
      reject(e);
      return;
    }
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
