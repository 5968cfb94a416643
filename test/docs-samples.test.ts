// Every ```ts block in README.md and docs/guides/*.md compiles against the
// package as a user imports it ('muser', 'muser/client'): the blocks are
// written into a folder inside the project, where the package's own name
// resolves through package.json "exports" to dist/, and type-checked with
// the project's TypeScript. A block whose first line is `// fragment` is
// an excerpt that cannot stand alone; there are few.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FRAGMENT = '// fragment';
const MAX_FRAGMENTS = 3;

interface Block {
  doc: string;
  line: number;
  code: string;
}

function blocksOf(doc: string): Block[] {
  const lines = readFileSync(join(root, doc), 'utf8').split('\n');
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```ts') continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end].trim() !== '```') end++;
    assert.ok(end < lines.length, `${doc}:${i + 1}: unterminated code block`);
    out.push({ doc, line: start + 1, code: lines.slice(start, end).join('\n') });
    i = end;
  }
  return out;
}

function docs(): string[] {
  const guides = readdirSync(join(root, 'docs', 'guides'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => join('docs', 'guides', f));
  return ['README.md', ...guides];
}

test('every ts code block in the README and the guides type-checks against the package', async () => {
  const all = docs().flatMap(blocksOf);
  const fragments = all.filter((b) => b.code.trimStart().startsWith(FRAGMENT));
  const compiled = all.filter((b) => !fragments.includes(b));
  assert.ok(compiled.length >= 10, `only ${compiled.length} compiled blocks found: is the extraction broken?`);
  assert.ok(fragments.length <= MAX_FRAGMENTS, `${fragments.length} fragments (${fragments.map((b) => `${b.doc}:${b.line}`).join(', ')}): make them whole samples`);

  const dir = mkdtempSync(join(root, '.docs-samples-'));
  try {
    const names = compiled.map((b) => `${b.doc.replace(/[/.]/g, '_')}_L${b.line}.ts`);
    compiled.forEach((b, i) => writeFileSync(join(dir, names[i]), `${b.code}\nexport {};\n`));
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          types: ['node'],
          skipLibCheck: true,
          noUnusedLocals: false,
        },
        include: ['*.ts'],
      }),
    );
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await promisify(execFile)(process.execPath, [tsc, '-p', dir, '--pretty', 'false'], { cwd: root }).then(
      () => '',
      (e: { stdout?: string; message: string }) => e.stdout || e.message,
    );
    // Point each error at its doc and line: file names carry both.
    assert.equal(result, '', `doc samples do not compile:\n${result}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the API reference builds from the TSDoc without warnings (npm run docs)', async () => {
  // typedoc.json treats warnings as errors: a public type that references an
  // unexported one, or a broken {@link}, fails here.
  const typedoc = join(root, 'node_modules', 'typedoc', 'bin', 'typedoc');
  const result = await promisify(execFile)(process.execPath, [typedoc, '--emit', 'none'], { cwd: root }).then(
    () => '',
    (e: { stdout?: string; stderr?: string; message: string }) => `${e.stdout ?? ''}${e.stderr ?? ''}` || e.message,
  );
  assert.equal(result, '', `typedoc:\n${result}`);
});
