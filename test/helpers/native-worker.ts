/**
 * Worker-thread side of native-worker.test.ts: loads the addon in a worker,
 * does a socket round trip and an eventfd count through its own pollers
 * (one of them busy-polling), and posts what it saw.
 */
import { parentPort } from 'node:worker_threads';
import { native, PollEvent, PollMode } from '../../src/native/index.js';

const [a, b] = native.socketpair();
const efd = native.eventfd(0);
const seen: { data?: string; count?: number; spinStarts?: number } = {};
const done = (): void => {
  if (seen.data === undefined || seen.count === undefined) return;
  native.pollStop(pa);
  native.pollStop(pe);
  for (const fd of [a, b, efd]) native.close(fd);
  seen.spinStarts = native.spinState()[1];
  parentPort!.postMessage(seen);
};
const pa = native.pollStart(a, PollMode.Stream, (kind, data) => {
  if (kind !== PollEvent.Data) return;
  seen.data = (data as Buffer).toString();
  done();
});
native.pollSpin(pa, 1e6);
const pe = native.pollStart(efd, PollMode.EventFd, (kind, count) => {
  if (kind !== PollEvent.Count) return;
  seen.count = count as number;
  done();
});
native.sendmsg(b, Buffer.from('from the worker'));
native.eventfdWrite(efd, 3);
