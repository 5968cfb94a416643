// The package works as a dependency: `npm pack` it, install the tarball into
// an empty project (its install script builds the addon there), then a
// TypeScript consumer that imports 'muser' and 'muser/client' type-checks
// against the shipped declarations, and, compiled, serves a device that its
// own client reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = promisify(execFile);

const CONSUMER = `import { defineRegisters, serve, startDeviceProgram, type DeviceSpec } from 'muser';
import { Client } from 'muser/client';

const registers = defineRegisters([{ name: 'id', offset: 0, width: 4, access: 'ro', reset: 0xfeedf00d }]);
const spec: DeviceSpec = {
  identity: { vendorId: 0x1234, deviceId: 0xabcd },
  bars: { 0: registers.bar({ size: 4096 }) },
};
// @ts-expect-error the shipped types are real: an identity needs a deviceId
const wrong: DeviceSpec = { identity: { vendorId: 1 } };
void wrong;

const path = process.argv[2];
const server = serve(spec, path, { log: 'silent' });
const client = await Client.connect(path);
const config = await client.regionRead(7, 0, 4);
const id = (await client.regionRead(0, 0, 4)).readUInt32LE(0);
client.close();
server.close();
// A device in Python, from the installed package: its Python side ships too.
const program = await startDeviceProgram({ command: ['python3', 'node_modules/muser/python/examples/pvpanic.py'], log: 'silent' });
const pvpanic = serve(program.device, path + '.py', { log: 'silent' });
const client2 = await Client.connect(path + '.py');
const events = (await client2.regionRead(0, 0, 1))[0];
client2.close();
pvpanic.close();
console.log(JSON.stringify({ vendor: config.readUInt16LE(0), device: config.readUInt16LE(2), id, events }));
`;

test('npm pack, install the tarball in an empty project, import, type-check, serve', async () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { files: string[]; scripts: Record<string, string>; dependencies?: object };
  assert.ok(pkg.files.includes('dist/src'), 'the compiled JS ships');
  assert.match(pkg.scripts.prepare, /tsc/, 'npm pack (and npm install in a checkout) compile dist/ first');
  assert.equal(pkg.dependencies, undefined, 'no runtime dependencies: the install needs no registry');

  const work = mkdtempSync(join(tmpdir(), 'muser-pack-'));
  try {
    // dist/ is already built (npm test runs the compiled tests), by the same
    // tsc that `prepare` runs: skip it here to keep the test short.
    const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root });
    const [{ filename, files }] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
    const shipped = new Set(files.map((f) => f.path));
    for (const f of ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/client/index.js', 'dist/src/cli/main.js', 'native/muser.c', 'native/args.h', 'binding.gyp', 'vm/setup.sh', 'vm/init', 'python/muser/__init__.py', 'python/examples/pvpanic.py']) {
      assert.ok(shipped.has(f), `${f} is in the tarball`);
    }
    assert.ok(![...shipped].some((f) => f.startsWith('dist/test/') || f.startsWith('test/')), 'no tests in the tarball');

    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    // --offline: nothing beyond the tarball is needed. The install script builds the addon with npm's own node-gyp.
    await run('npm', ['install', '--offline', '--no-audit', '--no-fund', join(work, filename)], { cwd: app });
    assert.ok(existsSync(join(app, 'node_modules', 'muser', 'build', 'Release', 'muser.node')), 'the addon was built at install');
    assert.ok(existsSync(join(app, 'node_modules', '.bin', 'muser')), 'the muser command is linked');

    writeFileSync(join(app, 'consumer.ts'), CONSUMER);
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          // The consumer has no @types/node of its own; lend it ours.
          typeRoots: [join(root, 'node_modules', '@types')],
          types: ['node'],
        },
        files: ['consumer.ts'],
      }),
    );
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const checked = await run(process.execPath, [tsc, '-p', app, '--pretty', 'false'], { cwd: app }).then(
      () => '',
      (e: { stdout?: string; message: string }) => e.stdout || e.message,
    );
    assert.equal(checked, '', `the consumer does not type-check against the installed package:\n${checked}`);

    const served = await run(process.execPath, [join(app, 'consumer.js'), join(work, 'dev.sock')], { cwd: app });
    assert.deepEqual(JSON.parse(served.stdout), { vendor: 0x1234, device: 0xabcd, id: 0xfeedf00d, events: 3 });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
