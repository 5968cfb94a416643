/**
 * Stop when npm, our parent, is gone. `npm run` and `npx` exit on SIGTERM
 * without passing it on, which would leave the device serving with nobody
 * to stop it. Node offers no parent-death signal, so this polls the parent
 * pid (cheap: one getppid per tick) while npm started us.
 */

/** How often the parent pid is checked. */
const PARENT_POLL_MS = 200;

/**
 * Calls `onGone` once when the parent process changes, if npm started this
 * process (npm sets `npm_lifecycle_event` for scripts and `npx`). A shell's
 * child is left alone: `nohup muser run ... &` must outlive the shell.
 * Returns a function that stops watching.
 */
export function watchParent(onGone: () => void, env: NodeJS.ProcessEnv = process.env): () => void {
  if (env.npm_lifecycle_event === undefined) return () => {};
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    onGone();
  }, PARENT_POLL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
