/** Opens a {@link SharedBackend} handle in this thread. */
import type { BlockBackend } from './backend.js';
import { openFileBackend } from './file.js';
import { openSharedMemfd } from './memfd.js';
import type { SharedBackend } from './shared.js';

/** This thread's own backend over the storage a handle names (takes ownership of a memfd handle's fd). */
export async function openSharedBackend(handle: SharedBackend): Promise<BlockBackend> {
  if (handle.kind === 'memfd') return openSharedMemfd(handle);
  if (handle.kind === 'module') {
    const mod = (await import(handle.module)) as { openBackend?: (data: unknown) => BlockBackend | Promise<BlockBackend> };
    if (typeof mod.openBackend !== 'function') throw new TypeError(`${handle.module} does not export openBackend(data)`);
    return mod.openBackend(handle.data);
  }
  return openFileBackend(handle.path, { readOnly: handle.readOnly });
}
