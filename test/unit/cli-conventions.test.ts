import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { notices } from '../../src/cli/args.ts';
import { run } from '../../src/cli/main.ts';

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await run(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

test('--version prints the package version and which page hasher runs', async () => {
  const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  const r = await cli(['--version']);
  assert.equal(r.code, 0);
  assert.match(r.out, new RegExp(`^presync ${version.replace(/\./g, '\\.')} \\(page hasher: (native|wasm)\\)\\n$`));
});

test('--help works on every command, with examples and the exit statuses', async () => {
  for (const argv of [['launch'], ['status'], ['abort'], ['set'], ['bench'], ['migrate'], ['serve'], ['demo'], ['qemu', 'migrate'], ['trace', 'replay'], ['report'], ['faults'], ['bench', 'perf']]) {
    const r = await cli([...argv, '--help']);
    assert.equal(r.code, 0, `${argv.join(' ')} --help: ${r.err}`);
    assert.match(r.out, /Examples:/, argv.join(' '));
    assert.match(r.out, /Exit status: 0 done · 1 .* 2 bad usage · 3 rolled back .* 4 in doubt/, argv.join(' '));
  }
  const bench = await cli(['bench', '--help']);
  for (const b of ['paper', 'throughput', 'qemu', 'perf']) assert.match(bench.out, new RegExp(`\\n  ${b} `), 'bench alone lists its benches');
});

test('old millisecond flags still work, with one deprecation line; short and long workload names both work', async () => {
  const said: string[] = [];
  const write = notices.write;
  notices.write = (t) => void said.push(t);
  try {
    const old = await cli(['demo', '--json', '--workloads', 'text', '--policies', 'presync', '--launch-after-ms', '5000']);
    const now = await cli(['demo', '--json', '--workloads', 'text-editing', '--policies', 'presync', '--launch-after', '5s']);
    assert.equal(old.code, 0, old.err);
    assert.equal(old.out, now.out, 'the same run either way');
    assert.deepEqual(said, ['presync: --launch-after-ms is deprecated; use --launch-after 5000ms\n']);
    const bad = await cli(['demo', '--launch-after', '5000']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /PRESYNC_ERR_BAD_ARGUMENT: --launch-after: invalid duration "5000": a unit is required/);
  } finally {
    notices.write = write;
  }
});
