/**
 * Lets a device file anywhere import 'muser': a module resolve hook (run in
 * Node's hooks thread) that maps the bare specifiers `muser` and
 * `muser/client` to the running muser's own entry points, but only when
 * the normal resolution fails. A file inside a project that depends on
 * muser keeps getting that project's muser.
 */
interface ResolveContext {
  parentURL?: string;
}
type NextResolve = (specifier: string, context: ResolveContext) => Promise<{ url: string }>;

/** Entry point URLs by bare specifier, sent by {@link registerMuserResolution}. */
let entries: Record<string, string> = {};

/** Called once by module.register with its `data`. */
export function initialize(data: { entries: Record<string, string> }): void {
  entries = data.entries;
}

/** The resolve hook. */
export async function resolve(specifier: string, context: ResolveContext, next: NextResolve): Promise<{ url: string; shortCircuit?: boolean }> {
  try {
    return await next(specifier, context);
  } catch (e) {
    const url = entries[specifier];
    if (url === undefined || (e as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw e;
    return { url, shortCircuit: true };
  }
}
