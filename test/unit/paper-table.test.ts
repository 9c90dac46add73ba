import { test } from 'node:test';
import assert from 'node:assert/strict';
import { paperMeasure, quantile, runPaper } from '../../src/lab/paper.ts';
import { run } from '../../src/cli/main.ts';

test('paper table: naive is the zero of the reduction, oracle the floor of the bytes, every run verified', () => {
  const res = runPaper({ workloads: ['audio'], policies: ['presync-naive', 'presync', 'oracle'], seeds: 1, launchMs: [6_000], competing: false });
  const by = Object.fromEntries(res.rows.map((r) => [r.policy, r]));
  assert.equal(by['presync-naive'].reduction, 0);
  assert.equal(by['presync-naive'].rewriteReduction, 0);
  assert.equal(by['presync-naive'].addedPauseMs, 0);
  // The oracle sends each page once: no rewrite traffic at all.
  assert.equal(by.oracle.rewriteReduction, 1);
  assert.ok(by.presync.rewriteReduction > 0.5, `audio's PCM ring is held: ${by.presync.rewriteReduction}`);
  assert.ok(by.presync.addedPauseMs <= 5, `within the 5 ms added-pause cap: ${by.presync.addedPauseMs}`);
  assert.equal(by.oracle.oracleRatio, 1);
  assert.ok(by.presync.reduction > 0, `presync saves something: ${by.presync.reduction}`);
  assert.ok(by.presync.reduction <= by.oracle.reduction);
  assert.ok(by.presync.oracleRatio >= 1);
  assert.equal(by.presync.paperReduction, 0.639);
  for (const r of res.rows) assert.equal(r.verified, true, r.policy);
  // The launch-agnostic bound is on the average over launch moments, so one launch may beat it; it is a fraction and a ratio.
  assert.equal(res.bounds.length, 1);
  assert.ok(res.bounds[0].boundRewriteReduction > 0 && res.bounds[0].boundRewriteReduction <= 1);
  assert.ok(res.bounds[0].boundOracleRatio >= 1);
});

test('bench paper runs recorded traces next to the synthetic workloads', () => {
  // A trace of a real program (traces/) as one more workload: same measure, every run verified.
  return (async () => {
    const { loadTraceWorkload } = await import('../../src/sim/trace-workload.ts');
    const vim = await loadTraceWorkload(new URL('../../traces/vim.jsonl.gz', import.meta.url).pathname, { name: 'trace:vim' });
    const res = runPaper({ workloads: ['trace:vim'], policies: ['presync-naive', 'presync'], seeds: 1, launchMs: [8_000], competing: false, workloadOf: (n) => (n === 'trace:vim' ? vim : undefined) });
    assert.equal(res.rows.length, 2);
    const p = res.rows.find((r) => r.policy === 'presync')!;
    assert.equal(p.verified, true);
    assert.ok(p.rewriteReduction > 0.3, `vim's typing is held: ${p.rewriteReduction}`);
    assert.ok(p.addedPauseMs <= 5, `within the cap: ${p.addedPauseMs}`);
    assert.ok(Number.isFinite(p.oracleRatio) && p.oracleRatio >= 1);
  })();
});

test("the paper's measure: rewrite reduction, added pause at the link rate, oracle ratio, paired run by run", () => {
  const naive = [
    { bytes: 1000, steady: 400, rewrite: 500, residualMs: 1 },
    { bytes: 2000, steady: 800, rewrite: 1000, residualMs: 2 },
  ];
  const oracle = [
    { bytes: 500, steady: 100, rewrite: 0, residualMs: 1 },
    { bytes: 1000, steady: 200, rewrite: 0, residualMs: 2 },
  ];
  const policy = [
    { bytes: 750, steady: 200, rewrite: 250, residualMs: 4 },
    { bytes: 1000, steady: 200, rewrite: 0, residualMs: 3 },
  ];
  const m = paperMeasure(policy, naive, oracle);
  assert.equal(m.rewriteReduction, 0.75); // median of 0.5 and 1
  assert.equal(m.addedPauseMs, 2); // median of 3 and 1
  assert.equal(m.addedPauseP95Ms, 2.9);
  assert.equal(m.oracleRatio, 1.25); // median of 1.5 and 1
  assert.equal(m.reduction, 0.375);
  assert.equal(m.steadyReduction, 0.625);
  // No rewrite traffic at all for naive: a policy with none is no worse (0), one with some is infinitely worse.
  const none = [{ bytes: 10, steady: 0, rewrite: 0, residualMs: 0 }];
  assert.equal(paperMeasure(none, none, none).rewriteReduction, 0);
  assert.equal(paperMeasure([{ ...none[0], rewrite: 5 }], none, none).rewriteReduction, -Infinity);
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
  for (const k of ['workload', 'policy', 'reduction', 'rewriteReduction', 'addedPauseMs', 'oracleRatio', 'residualP50', 'residualP95', 'launchToRunningMs', 'wastedPages']) assert.ok(k in j.rows[0], k);
  err = '';
  assert.equal(await run(['bench', 'paper', '--workloads', 'nope'], io), 2);
  assert.match(err, /PRESYNC_ERR_BAD_ARGUMENT/);
});
