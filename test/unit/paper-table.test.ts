import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quantile, runPaper } from '../../src/lab/paper.ts';
import { run } from '../../src/cli/main.ts';

test('paper table: naive is the zero of the reduction, oracle the floor of the bytes, every run verified', () => {
  const res = runPaper({ workloads: ['audio'], policies: ['presync-naive', 'presync', 'oracle'], seeds: 1, launchMs: [6_000], competing: false });
  const by = Object.fromEntries(res.rows.map((r) => [r.policy, r]));
  assert.equal(by['presync-naive'].reduction, 0);
  assert.equal(by.oracle.oracleRatio, 1);
  assert.ok(by.presync.reduction > 0, `presync saves something: ${by.presync.reduction}`);
  assert.ok(by.presync.reduction <= by.oracle.reduction);
  assert.ok(by.presync.oracleRatio >= 1);
  assert.equal(by.presync.paperReduction, 0.639);
  for (const r of res.rows) assert.equal(r.verified, true, r.policy);
});

test('quantile interpolates between order statistics', () => {
  assert.equal(quantile([3, 1, 2], 0.5), 2);
  assert.equal(quantile([0, 10], 0.95), 9.5);
  assert.ok(Number.isNaN(quantile([], 0.5)));
});

test('bench paper CLI: JSON rows with the documented fields; bad flags are BAD_ARGUMENT', async () => {
  let out = '';
  let err = '';
  const io = { out: (t: string) => void (out += t), err: (t: string) => void (err += t) };
  const rc = await run(['bench', 'paper', '--json', '--workloads', 'idle', '--policies', 'presync-naive,presync', '--launch-ms', '4000', '--seeds', '1', '--no-competing'], io);
  assert.equal(rc, 0, err);
  const j = JSON.parse(out) as { rows: Array<Record<string, unknown>> };
  assert.equal(j.rows.length, 2);
  for (const k of ['workload', 'policy', 'reduction', 'oracleRatio', 'residualP50', 'residualP95', 'launchToRunningMs', 'wastedPages']) assert.ok(k in j.rows[0], k);
  err = '';
  assert.equal(await run(['bench', 'paper', '--workloads', 'nope'], io), 2);
  assert.match(err, /PRESYNC_ERR_BAD_ARGUMENT/);
});
