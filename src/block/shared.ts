/**
 * Backends that worker threads can open for themselves: a handle is plain,
 * structured-cloneable data (a path, or an fd of this process), and each
 * thread opens its own backend over the same storage.
 */
import type { BlockBackend } from './backend.js';

/** What a worker thread needs to open the same storage. */
export type SharedBackend =
  /** A file or block device, opened again by path. */
  | { readonly kind: 'file'; readonly path: string; readonly readOnly: boolean }
  /** A memfd RAM disk: `fd` is a dup owned by whoever receives the handle. */
  | { readonly kind: 'memfd'; readonly fd: number; readonly size: number; readonly readOnly: boolean }
  /**
   * Any backend a module opens: each thread imports `module` (a file URL or
   * an absolute path) and calls its `openBackend(data)`; `data` must be
   * structured-cloneable.
   */
  | { readonly kind: 'module'; readonly module: string; readonly data: unknown };

/** A backend that can hand other threads a {@link SharedBackend}. */
export interface ShareableBackend extends BlockBackend {
  /** A new handle (each call dups what it must: the receiver owns it). */
  share(): SharedBackend;
}

/** True when `backend` can be opened by worker threads too. */
export function isShareable(backend: BlockBackend): backend is ShareableBackend {
  return typeof (backend as Partial<ShareableBackend>).share === 'function';
}
