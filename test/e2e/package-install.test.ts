/**
 * presync as an integrator gets it: `npm pack` of this project, `npm install`
 * of the tarball in a fresh directory outside the repository, then a small
 * typed ES module that imports `migrate` and `serve`, moves a 16 MiB image
 * over loopback and prints `done`; tsc checks the module against the
 * package's own .d.ts, and `npx presync --version` prints the version.
 * Needs the npm registry (or its cache) for the package's dependencies.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { builtCli } from '../../src/lab/cli-entry.ts';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

const APP = `import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { migrate, serve, type MigrateOptions, type MigrationResult } from 'presync';

const dir = process.argv[2]!;
const src = join(dir, 'source.img');
const dst = join(dir, 'target.img');
writeFileSync(src, randomBytes(16 * 1024 * 1024));
const secret = 'package-test-secret-0123456789';

const target = await serve({ listen: '127.0.0.1:0', image: dst, secret });
const options: MigrateOptions = { image: src, to: target.address, secret, launchWhenReady: true, downtimeLimit: '1s' };
const m = migrate(options);
let progress = 0;
m.on('progress', () => progress++);
const events: string[] = [];
let lastRemaining: number | null = null;
for await (const e of m) {
  events.push(e.event + '@' + e.ts);
  if (e.event === 'progress') lastRemaining = e.bytesRemaining; // typed: number
}
const r: MigrationResult = await m.result;
await target.close();
const same = Buffer.compare(readFileSync(src), readFileSync(dst)) === 0;
if (r.outcome !== 'done' || !same || progress === 0 || lastRemaining === null || !events.at(-1)?.startsWith('result@')) {
  console.error(JSON.stringify({ outcome: r.outcome, error: r.error, same, progress, lastRemaining, last: events.at(-1) }));
  process.exit(1);
}
console.log('done');
`;

test('npm pack, npm install of the tarball elsewhere, a typed module migrates 16 MiB and prints done', { timeout: 600_000 }, async () => {
  builtCli(); // dist/ up to date; pack below skips the prepare script's second build
  const dir = mkdtempSync(join(tmpdir(), 'presync-pkg-'));
  try {
    await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: ROOT });
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    assert.ok(tgz, 'npm pack made a tarball');
    const listing = (await run('tar', ['-tzf', join(dir, tgz)])).stdout.split('\n');
    assert.ok(listing.includes('package/dist/index.js') && listing.includes('package/dist/index.d.ts'), 'the tarball has the built entry and its types');
    assert.deepEqual(listing.filter((f) => /^package\/(test|results|src)\//.test(f) || f.endsWith('.ts') && !f.endsWith('.d.ts')), [], 'no tests, results or sources');

    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'presync-consumer', private: true, type: 'module' }));
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, types: ['node'], skipLibCheck: false } }),
    );
    const tsVersion = (JSON.parse(readFileSync(join(ROOT, 'node_modules/typescript/package.json'), 'utf8')) as { version: string }).version;
    await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', join(dir, tgz), `typescript@${tsVersion}`, '@types/node@^20'], { cwd: dir, timeout: 480_000 });

    writeFileSync(join(dir, 'app.mts'), APP);
    // Typed against the installed package's .d.ts, not the repository's sources.
    await run(process.execPath, [join(dir, 'node_modules/typescript/bin/tsc'), '-p', dir], { cwd: dir });
    await run(process.execPath, [join(dir, 'node_modules/typescript/bin/tsc'), '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022', '--types', 'node', '--outDir', dir, join(dir, 'app.mts')], { cwd: dir });
    const app = await run(process.execPath, [join(dir, 'app.mjs'), dir], { cwd: dir, timeout: 120_000 });
    assert.equal(app.stdout.trim(), 'done');

    const v = await run('npx', ['--no-install', 'presync', '--version'], { cwd: dir });
    assert.match(v.stdout, new RegExp(`^presync ${VERSION.replace(/\./g, '\\.')} \\(page hasher: (native|wasm)\\)$`, 'm'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
