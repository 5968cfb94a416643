/**
 * The folder tree is the architecture: each layer imports only layers below
 * it, no modules import each other in a circle (not even for types: a type
 * shared by two modules belongs in a module below both), and samples reach muser only
 * through the package's public entry points, as a user's device would.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** Each folder of src/ and the folders it may import (besides itself). */
const ALLOWED: Record<string, readonly string[]> = {
  layout: [],
  values: [],
  native: [],
  protocol: ['layout'],
  transport: ['native', 'protocol', 'values'],
  pci: [],
  block: ['native'],
  device: ['native', 'protocol', 'pci', 'values'],
  migration: ['native', 'protocol', 'device'],
  server: ['native', 'layout', 'protocol', 'transport', 'pci', 'device', 'migration', 'values'],
  client: ['native', 'protocol', 'transport'],
  virtio: ['native', 'layout', 'pci', 'block', 'device'],
  nvme: ['native', 'layout', 'pci', 'block', 'device', 'values'],
  program: ['native', 'protocol', 'transport', 'pci', 'device'],
  isolate: ['native', 'protocol', 'transport', 'device', 'migration', 'server'],
  cli: ['native', 'protocol', 'transport', 'pci', 'device', 'server', 'client', 'samples', 'program', 'isolate'],
};

/** What samples may import: the package's public entry points. */
const PUBLIC_ENTRIES = ['index.ts', 'client/index.ts'];

interface Import {
  from: string;
  to: string;
  typeOnly: boolean;
}

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [p] : [];
  });
}

function importsOf(file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  const out: Import[] = [];
  // `declare module` completes a module's declarations (a forward-declared type): it depends on that module too.
  const re = /^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+'(\.{1,2}\/[^']+)\.js'|import\(\s*'(\.{1,2}\/[^']+)\.js'\s*\)|^\s*import\s+'(\.{1,2}\/[^']+)\.js'|^\s*declare\s+module\s+'(\.{1,2}\/[^']+)\.js'/gm;
  for (const m of text.matchAll(re)) {
    const spec = m[3] ?? m[4] ?? m[5] ?? m[6];
    const typeOnly = m[2] !== undefined;
    out.push({ from: relative(SRC, file), to: relative(SRC, resolve(dirname(file), `${spec}.ts`)), typeOnly });
  }
  return out;
}

const folderOf = (path: string): string => (path.includes('/') ? path.split('/')[0] : '.');
const all = sources(SRC).flatMap(importsOf);

test('layers: every import goes to the same folder or to a layer below', () => {
  const wrong = all.filter((i) => {
    const a = folderOf(i.from);
    const b = folderOf(i.to);
    if (a === b || a === '.' || a === 'samples') return false;
    const allowed = ALLOWED[a];
    assert.ok(allowed, `src/${a}/ has no entry in the layer table`);
    return !allowed.includes(b);
  });
  assert.deepEqual(wrong.map((i) => `${i.from} -> ${i.to}`), []);
});

test('layers: samples import muser only through its public entry points', () => {
  const wrong = all.filter((i) => folderOf(i.from) === 'samples' && folderOf(i.to) !== 'samples' && !PUBLIC_ENTRIES.includes(i.to));
  assert.deepEqual(wrong.map((i) => `${i.from} -> ${i.to}`), []);
});

test('layers: no circle of imports between modules, type-only imports included', () => {
  const graph = new Map<string, string[]>();
  for (const i of all) graph.set(i.from, [...(graph.get(i.from) ?? []), i.to]);
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (node: string, path: string[]): void => {
    if (state.get(node) === 'done') return;
    if (state.get(node) === 'open') {
      cycles.push([...path.slice(path.indexOf(node)), node].join(' -> '));
      return;
    }
    state.set(node, 'open');
    for (const next of graph.get(node) ?? []) visit(next, [...path, node]);
    state.set(node, 'done');
  };
  for (const node of graph.keys()) visit(node, []);
  assert.deepEqual(cycles, []);
});

test('layers: the import scanner sees the imports (a scanner that finds nothing would pass everything)', () => {
  assert.ok(all.length > 200, `only ${all.length} imports found`);
  assert.ok(all.some((i) => i.from === 'server/session.ts' && i.to === 'device/device.ts'));
  assert.ok(all.some((i) => i.typeOnly));
  assert.ok(all.some((i) => i.from === 'device/device.ts' && i.to === 'device/types.ts'), 'the declare module that completes Device is an edge');
});
