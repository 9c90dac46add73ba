import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedQueue } from '../../src/core/keyed-queue.ts';
import { forEachInRange, PageSet, PageSetMirror } from '../../src/core/pageset.ts';
import { HoldBack } from '../../src/core/policies/hold-back.ts';
import { MarkovPredictor } from '../../src/core/predict/markov.ts';
import type { RewritePredictor } from '../../src/core/predict/types.ts';
import { Rng } from '../../src/core/rng.ts';
import { SendPrefix, takeHead } from '../../src/core/send-prefix.ts';
import { ReferenceHoldBack } from '../helpers/reference-hold-back.ts';

const GBIT = 1e9 / 8;

test('KeyedQueue: take() reads lowest key first, first filed first, through removals, re-keying and compaction', () => {
  const n = 500;
  const q = new KeyedQueue(n, 8);
  const rng = new Rng(1);
  // The model: per key, the pages in the order they got that key.
  const model = new Map<number, number>();
  const order: number[] = [];
  for (let step = 0; step < 20000; step++) {
    const p = Math.floor(rng.next() * n);
    if (rng.next() < 0.3) {
      q.remove(p);
      model.delete(p);
    } else {
      const k = Math.floor(rng.next() * 8);
      q.set(p, k);
      if (model.get(p) !== k) {
        model.set(p, k);
        order.push(p);
      }
    }
    if (step % 997 === 0) {
      // Latest filing of each page decides its place within its key.
      const lastAt = new Map<number, number>();
      order.forEach((x, i) => lastAt.set(x, i));
      const want = [...model.keys()].sort((a, b) => model.get(a)! - model.get(b)! || lastAt.get(a)! - lastAt.get(b)!);
      assert.equal(q.size, model.size);
      assert.deepEqual([...q.take(Infinity)], want);
      assert.deepEqual([...q.take(17)], want.slice(0, 17), 'a prefix is the same prefix');
      for (const x of want) assert.equal(q.key(x), model.get(x));
    }
  }
});

test('PageSetMirror reports exactly what was added and removed; head() and forEachInRange() agree with iteration', () => {
  const n = 3000;
  const rng = new Rng(2);
  const s = new PageSet(n);
  const m = new PageSetMirror(n);
  let known = new Set<number>();
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 200; i++) {
      const p = Math.floor(rng.next() * n);
      if (rng.next() < 0.5) s.add(p);
      else s.delete(p);
    }
    const added: number[] = [];
    const removed: number[] = [];
    m.sync(s, (p) => added.push(p), (p) => removed.push(p));
    const now = new Set(s);
    assert.deepEqual(added.sort((a, b) => a - b), [...now].filter((p) => !known.has(p)).sort((a, b) => a - b));
    assert.deepEqual(removed.sort((a, b) => a - b), [...known].filter((p) => !now.has(p)).sort((a, b) => a - b));
    known = now;
    const all = [...s];
    assert.deepEqual([...s.head(37)], all.slice(0, 37));
    assert.deepEqual([...s.head(1e9)], all);
    const from = Math.floor(rng.next() * n);
    const got: number[] = [];
    forEachInRange(s, from, from + 333, (p) => got.push(p));
    assert.deepEqual(got, all.filter((p) => p >= from && p < from + 333));
  }
});

test('SendPrefix: the list covers the budget with room, and the room grows when the shell got through a whole cut list', () => {
  const sp = new SendPrefix();
  const set = PageSet.full(100_000);
  const limit = sp.limit(4120 * 1000, 4120, 0);
  assert.ok(limit >= 2000, `room for twice the budget's pages: ${limit}`);
  const a = takeHead(set, limit, sp);
  assert.equal(a.length, limit);
  // The shell sent all of it (cheap pages): next time the list is longer for the same budget.
  const next = sp.limit(4120 * 1000, 4120, a.length);
  assert.ok(next > limit, `${next} > ${limit}`);
  assert.equal(sp.limit(Infinity, 4120, 0), Infinity);
});

/** A predictor that counts the pages it is asked about. */
function counting(inner: RewritePredictor): RewritePredictor & { asked: number } {
  const c = {
    asked: 0,
    get name() { return inner.name; },
    get epoch() { return inner.epoch; },
    get stateBytes() { return inner.stateBytes; },
    observe: (d: Parameters<RewritePredictor['observe']>[0], e: number) => inner.observe(d, e),
    probRewrite: (p: number, h: number) => inner.probRewrite(p, h),
    probRewriteMany: (p: Uint32Array, h: number, o: Float64Array) => {
      c.asked += p.length;
      inner.probRewriteMany(p, h, o);
    },
    dutyMany: (p: Uint32Array, o: Float64Array) => {
      c.asked += p.length;
      inner.dutyMany(p, o);
    },
  };
  return c;
}

/** A guest with a hot buffer (written every epoch), a warm area (now and then) and rare random writes. */
function* epochs(n: number, count: number, seed: number): Generator<PageSet> {
  const rng = new Rng(seed);
  for (let e = 0; e < count; e++) {
    const d = new PageSet(n);
    for (let p = 0; p < n / 16; p++) d.add(p);
    for (let p = n / 4; p < n / 2; p++) if (rng.next() < 0.1) d.add(p);
    for (let i = 0; i < n / 200; i++) d.add(Math.floor(rng.next() * n));
    yield d;
  }
}

test('hold-back, incremental: with every page re-predicted each epoch it decides as the O(stale) rule did', () => {
  const n = 4096;
  const mNew = new MarkovPredictor(n);
  const mOld = new MarkovPredictor(n);
  const inc = new HoldBack(mNew, n, { refreshEpochs: 1 });
  const ref = new ReferenceHoldBack(mOld, n);
  const stale = PageSet.full(n);
  const bw = 20 * 4120 * 1000; // 20 pages per ms: 90 pages of added pause
  let e = 0;
  for (const dirty of epochs(n, 60, 4)) {
    stale.unionWith(dirty);
    mNew.observe(dirty, e);
    mOld.observe(dirty, e);
    const inp = { epoch: e, stale, dirtyPages: dirty.count(), dirty, bandwidthBytesPerSec: bw, wireBytesPerPage: 4120 };
    const a = inc.decide(inp);
    const b = ref.decide(inp);
    // Pages tied in a duty bucket may be taken in another order (and differ in duty by under 1/1024
    // each): the held set may differ by the page at the budget's edge.
    assert.ok(Math.abs(a.held - b.held) <= 1, `epoch ${e}: held ${a.held} vs ${b.held}`);
    assert.ok(Math.abs(a.expectedExtraResidual - b.expectedExtraResidual) <= a.held / 1024 + 1, `epoch ${e}: expected extra residual ${a.expectedExtraResidual} vs ${b.expectedExtraResidual}, held ${a.held}`);
    // As many pages go, in the same order of likelihood; within a bucket the order may differ, and so
    // may which held candidates of equal duty are held (a tie), hence which others are sent.
    assert.ok(Math.abs(a.send.length - b.send.length) <= 1);
    const q = new Float64Array(n);
    mNew.probRewriteMany(Uint32Array.from({ length: n }, (_, i) => i), 10, q);
    const bucket = (p: number) => Math.min(1023, Math.floor(q[p] * 1024));
    const below = (s: Uint32Array) => Array.from(s, bucket).filter((k) => k < 204);
    assert.deepEqual(below(a.send), below(b.send), `epoch ${e}: send order by bucket, below the threshold`);
    assert.equal(Array.from(a.send, bucket).findIndex((k) => k >= 204), Array.from(b.send, bucket).findIndex((k) => k >= 204));
    // The shell sends the first 300.
    for (const p of a.send.subarray(0, 300)) stale.delete(p);
    e++;
  }
});

test('hold-back, incremental: an epoch asks the predictor about the written pages, a slice and the held ones, not every stale page', () => {
  const n = 1 << 16;
  const m = counting(new MarkovPredictor(n));
  const refresh = 64;
  const hb = new HoldBack(m, n, { refreshEpochs: refresh });
  const stale = PageSet.full(n);
  let e = 0;
  const asked: number[] = [];
  for (const dirty of epochs(n, 40, 5)) {
    stale.unionWith(dirty);
    m.observe(dirty, e);
    m.asked = 0;
    const r = hb.decide({ epoch: e, stale, dirtyPages: dirty.count(), dirty, bandwidthBytesPerSec: GBIT, wireBytesPerPage: 4120, maxSend: 6000 });
    assert.ok(r.send.length <= 6000);
    if (e > 0) {
      // q and duty for the written pages and the slice, plus the held candidates looked at (and one past them).
      const bound = 2 * (dirty.count() + n / refresh) + 2 * 4 * (r.held + r.forced + 64);
      assert.ok(m.asked <= bound, `epoch ${e}: ${m.asked} pages predicted, bound ${bound}, ${stale.count()} stale`);
      asked.push(m.asked);
    }
    for (const p of r.send.subarray(0, 500)) stale.delete(p);
    e++;
  }
  assert.ok(stale.count() > n / 2, 'most of the guest stayed stale, so an O(stale) rule would have asked far more');
  assert.ok(Math.max(...asked) < stale.count() / 2);
});
