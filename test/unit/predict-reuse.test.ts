import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PageSet } from '../../src/core/pageset.ts';
import { createPredictor, ReusePredictor } from '../../src/core/predict/index.ts';

function feed(p: { observe(d: PageSet, e: number): void }, size: number, history: number[][], from = 0): void {
  history.forEach((pages, i) => p.observe(PageSet.of(size, pages), from + i));
}

const every = (period: number, epochs: number, page: number): number[][] => Array.from({ length: epochs }, (_, e) => (e % period === 0 ? [page] : []));

test('reuse: a periodic page is predicted by the phase of its period, not only its rate', () => {
  const r = new ReusePredictor(64);
  // Page 1 written every 5 epochs: 0, 5, …, 45; the latest observed epoch is 49 (age 4, next write due now).
  feed(r, 64, every(5, 50, 1));
  assert.equal(r.expectedWait(1), 1);
  const dueSoon = r.probRewrite(1, 1);
  // Two epochs later (written at 50, now 51: age 1) the next write is 4 epochs away.
  feed(r, 64, [[1], []], 50);
  assert.equal(r.expectedWait(1), 4);
  const justWritten = r.probRewrite(1, 1);
  assert.ok(dueSoon > justWritten + 0.3, `due ${dueSoon} vs just written ${justWritten}`);
  // Duty is 1 / gap whatever the phase.
  const d = new Float64Array(1);
  r.dutyMany(Uint32Array.of(1), d);
  assert.ok(Math.abs(d[0] - 0.2) < 1e-6, String(d[0]));
});

test('reuse: a page written every epoch is near certain to be written in the next one', () => {
  const r = new ReusePredictor(8);
  feed(r, 8, Array.from({ length: 10 }, () => [3]));
  assert.ok(r.probRewrite(3, 1) >= 0.95, String(r.probRewrite(3, 1)));
});

test('reuse: fresh memory is judged by its region; a page overdue fades', () => {
  const r = new ReusePredictor(256, { regionPages: 64 });
  // Pages 0..9 (region 0) rewritten every 2 epochs; page 20 (region 0) and page 100 (region 1) written once, at epoch 19.
  const hist = Array.from({ length: 20 }, (_, e) => [...(e % 2 === 0 ? [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] : []), ...(e === 19 ? [20, 100] : [])]);
  feed(r, 256, hist);
  // Page 20 has no gap of its own: its region says 2 epochs; page 100's region knows nothing: the 50-epoch prior.
  assert.equal(r.expectedWait(20), 2);
  assert.equal(r.expectedWait(100), 50);
  assert.ok(r.probRewrite(20, 2) > 3 * r.probRewrite(100, 2));
  // Page 0 stops being written: once overdue, its wait grows with the quiet.
  const quiet = Array.from({ length: 30 }, () => [1]);
  feed(r, 256, quiet, 20);
  const early = r.probRewrite(0, 1);
  feed(r, 256, quiet, 50);
  assert.ok(r.probRewrite(0, 1) < early, `${r.probRewrite(0, 1)} < ${early}`);
});

test('reuse: deterministic, epochs must increase, bad options are BAD_ARGUMENT, created by name', () => {
  const a = createPredictor('reuse', 128);
  const b = createPredictor('reuse', 128);
  const hist = Array.from({ length: 40 }, (_, e) => [e % 7, (e * 13) % 128, 100 + (e % 3)]);
  feed(a, 128, hist);
  feed(b, 128, hist);
  const pages = Uint32Array.from({ length: 128 }, (_, i) => i);
  const pa = new Float64Array(128);
  const pb = new Float64Array(128);
  a.probRewriteMany(pages, 10, pa);
  b.probRewriteMany(pages, 10, pb);
  assert.deepEqual(pa, pb);
  for (const x of pa) assert.ok(x >= 0 && x <= 1);
  assert.throws(() => a.observe(new PageSet(128), 39), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  assert.throws(() => new ReusePredictor(8, { gapGain: 0 }), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  assert.throws(() => a.probRewrite(0, 0), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
});
