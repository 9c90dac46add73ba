import { test } from 'node:test';
import assert from 'node:assert/strict';
import { run } from '../../src/cli/main.ts';
import { runScenario, DEFAULT_SCENARIO } from '../../src/lab/scenario.ts';

async function demoJson(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await run(['demo', ...args], { out: (t) => void (out += t), err: (t) => void (err += t) });
  return { code, out, err };
}

test('presync demo --json is byte-identical across runs; presync beats precopy and every row verifies', async () => {
  const a = await demoJson(['--json']);
  const b = await demoJson(['--json']);
  assert.equal(a.code, 0);
  assert.equal(a.out, b.out);
  const rows = (JSON.parse(a.out) as { results: Array<Record<string, unknown>> }).results;
  for (const w of ['text-editing', 'audio', 'movie']) {
    const naive = rows.find((r) => r.workload === w && r.policy === 'presync-naive')!;
    const pre = rows.find((r) => r.workload === w && r.policy === 'precopy')!;
    assert.ok((naive.launchToRunningMs as number) * 5 < (pre.launchToRunningMs as number), `${w}: ${naive.launchToRunningMs} vs ${pre.launchToRunningMs}`);
  }
  assert.ok(rows.every((r) => r.verified === true));
  for (const r of rows) {
    for (const k of ['workload', 'policy', 'launchToRunningMs', 'downtimeMs', 'presyncBytes', 'finalBytes', 'residualPagesAtLaunch', 'verified']) assert.ok(k in r, k);
  }
});

test('a different seed gives a different run; the same seed the same series', () => {
  const base = { ...DEFAULT_SCENARIO, workload: 'movie', policy: 'presync', launchAtMs: 10_000 };
  const x = runScenario({ ...base, seed: 1 });
  const y = runScenario({ ...base, seed: 1 });
  const z = runScenario({ ...base, seed: 2 });
  assert.deepEqual(x, y);
  assert.notEqual(JSON.stringify(x.series), JSON.stringify(z.series));
});

test('bad demo flags get a clear message and a non-zero exit', async () => {
  for (const args of [['--bogus'], ['--seed', 'x'], ['--workloads', 'nope'], ['--policies', 'nope'], ['extra']]) {
    const r = await demoJson(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.err, /PRESYNC_ERR_BAD_ARGUMENT/);
    assert.doesNotMatch(r.err, /\n\s+at /, 'no stack trace');
  }
});
