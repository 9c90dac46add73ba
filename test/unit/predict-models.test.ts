import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PageSet } from '../../src/core/pageset.ts';
import { createPredictor, EwmaPredictor, MarkovPredictor } from '../../src/core/predict/index.ts';

/** Feeds epochs 0..history.length-1; history[e] lists the pages written in epoch e. */
function feed(p: { observe(d: PageSet, e: number): void }, size: number, history: number[][]): void {
  history.forEach((pages, e) => p.observe(PageSet.of(size, pages), e));
}

const close = (a: number, b: number, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} ≉ ${b}`);

test('markov: per-page transition estimates from counts (no pooling)', () => {
  const m = new MarkovPredictor(4, { pageStrength: 0 });
  // page 0: d d c d c c   page 1: c d d c c d
  feed(m, 4, [[0], [0, 1], [1], [0], [], [1]]);
  // page 0: transitions (virtual clean start) c→d d→d d→c c→d d→c c→c: a = 1/3, b = 2/3, clean now.
  const t0 = m.transitionProbs(0);
  close(t0.a, 1 / 3);
  close(t0.b, 2 / 3);
  assert.equal(t0.dirtyNow, false);
  close(m.probRewrite(0, 1), 2 / 3);
  close(m.probRewrite(0, 2), 1 - (1 / 3) ** 2);
  // page 1: c→c c→d d→d d→c c→c c→d: a = 1/2 (the dirty latest epoch has no successor yet), b = 2/4, dirty now.
  const t1 = m.transitionProbs(1);
  close(t1.a, 1 / 2);
  close(t1.b, 1 / 2);
  assert.equal(t1.dirtyNow, true);
  close(m.probRewrite(1, 1), 0.5);
  close(m.probRewrite(1, 3), 1 - 0.5 * 0.25);
  // Write duty = stationary P(dirty) = b / (1 − a + b).
  const duty = new Float64Array(2);
  m.dutyMany(Uint32Array.of(0, 1), duty);
  close(duty[0], (2 / 3) / (1 - 1 / 3 + 2 / 3));
  close(duty[1], 0.5);
});

test('markov: a page with no history borrows its region estimate (shrinkage)', () => {
  const m = new MarkovPredictor(4, { regionPages: 2, pageStrength: 4, regionStrength: 0 });
  feed(m, 4, [[0], [0], [], [0], [], []]);
  // Region {0,1}: 3 dirty epochs, 1 d→d, 3 from-dirty, 2·6−3 = 9 from-clean, 2 c→d: a_r = 1/3, b_r = 2/9.
  const never = m.transitionProbs(1);
  close(never.a, 1 / 3);
  close(never.b, (4 * (2 / 9)) / (6 + 4)); // 6 clean epochs of its own, shrunk towards b_r
  close(m.probRewrite(1, 1), 4 / 45);
  const own = m.transitionProbs(0);
  close(own.a, (1 + 4 / 3) / (3 + 4));
  close(own.b, (2 + (4 * 2) / 9) / (3 + 4));
});

test('markov: a hot page predicts a rewrite, a page written once long ago does not', () => {
  const m = new MarkovPredictor(256);
  const hist: number[][] = [];
  for (let e = 0; e < 50; e++) hist.push(e === 3 ? [0, 100] : [0]);
  feed(m, 256, hist);
  assert.ok(m.probRewrite(0, 1) > 0.9);
  assert.ok(m.probRewrite(100, 1) < 0.1);
  assert.ok(m.probRewrite(200, 5) < 0.05);
});

test('markov: skipped epochs count as clean; epochs must increase', () => {
  const m = new MarkovPredictor(2, { pageStrength: 0 });
  m.observe(PageSet.of(2, [0]), 0);
  m.observe(PageSet.of(2, [0]), 5); // epochs 1..4 clean
  // transitions: c→d, d→c, c→c ×3, c→d → a = 0/1, b = 2/5, dirty now
  close(m.transitionProbs(0).a, 0);
  close(m.transitionProbs(0).b, 2 / 5);
  assert.throws(() => m.observe(new PageSet(2), 5), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  assert.throws(() => m.observe(new PageSet(3), 6), { code: 'PRESYNC_ERR_GEOMETRY' });
  assert.throws(() => m.probRewrite(2, 1), { code: 'PRESYNC_ERR_PAGE_RANGE' });
  assert.throws(() => m.probRewrite(0, 0), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
});

test('ewma: lazily decayed write rate and Poisson rewrite probability', () => {
  const e = new EwmaPredictor(4, { tauEpochs: 1 / Math.LN2 }); // decay 0.5 per epoch
  feed(e, 4, [[0], [0, 1], [], []]);
  // page 0: 0.5 after epoch 0, 0.5·0.5 + 0.5 = 0.75 after epoch 1, then two quiet epochs: 0.75/4.
  close(e.rate(0), 0.1875, 1e-4);
  close(e.probRewrite(0, 2), 1 - Math.exp(-0.375), 1e-4);
  // page 1: 0.5 after epoch 1, quiet since: 0.125.
  close(e.rate(1), 0.125, 1e-4);
  assert.equal(e.rate(2), 0);
  assert.equal(e.probRewrite(2, 10), 0);
  const out = new Float64Array(3);
  e.probRewriteMany(Uint32Array.of(0, 1, 2), 1, out);
  close(out[0], 1 - Math.exp(-0.1875), 1e-4);
  close(out[1], 1 - Math.exp(-0.125), 1e-4);
  assert.equal(out[2], 0);
  e.dutyMany(Uint32Array.of(0, 1, 2), out);
  close(out[0], 0.1875, 1e-4);
  close(out[1], 0.125, 1e-4);
  assert.equal(out[2], 0);
});

test('ewma: a page written every epoch converges to rate 1', () => {
  const e = new EwmaPredictor(1, { tauEpochs: 5 });
  for (let k = 0; k < 200; k++) e.observe(PageSet.of(1, [0]), k);
  close(e.rate(0), 1, 1e-3);
  assert.ok(e.probRewrite(0, 1) > 0.63);
});

test('predictors: the batch form agrees with the single-page form, state stays a few bytes per page', () => {
  for (const name of ['markov', 'ewma']) {
    const p = createPredictor(name, 1000);
    for (let k = 0; k < 30; k++) p.observe(PageSet.of(1000, [k % 7, 3 * k, 500 + (k % 3)]), k);
    const pages = Uint32Array.from({ length: 1000 }, (_, i) => i);
    const out = new Float64Array(1000);
    p.probRewriteMany(pages, 4, out);
    for (let i = 0; i < 1000; i += 37) close(out[i], p.probRewrite(i, 4));
    assert.ok(p.stateBytes <= 8 * 1000);
  }
  assert.throws(() => createPredictor('nope', 10), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
});
