/**
 * How muser shows a JavaScript value that failed a check, in the TypeError
 * or RangeError that names the field: `got '600'`, `got an object`,
 * `'agp' is not one of 'pm' | 'pcie'`. One wording for every check (spec
 * validation, serve() and listen options, register tables), so that the
 * same wrong value reads the same everywhere.
 */

/** Longest string shown whole; longer ones are cut with an ellipsis. */
const MAX_SHOWN = 64;

/**
 * A value as an error message shows it: strings quoted (so `'600'` is
 * visibly not `600`), bigints with their `n`, numbers, booleans, null and
 * undefined as written, and a function, array or other object by its kind
 * only (its contents could be large, or secret).
 */
export function describeValue(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return `'${v.length > MAX_SHOWN ? `${v.slice(0, MAX_SHOWN)}...` : v}'`;
    case 'bigint':
      return `${v}n`;
    case 'function':
      return 'a function';
    case 'symbol':
      return v.toString();
    case 'object':
      return v === null ? 'null' : Array.isArray(v) ? 'an array' : 'an object';
    default:
      return String(v);
  }
}
