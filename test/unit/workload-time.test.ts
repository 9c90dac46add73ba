import { test } from 'node:test';
import assert from 'node:assert/strict';
import { forEachPoissonEvent, forEachTick, hashSeed, keyInt, spreadRange } from '../../src/sim/workloads/time.ts';

/** Irregular cut points over [0, end], with some exactly on 10 ms multiples. */
function cuts(end: number): number[] {
  const out = [0];
  let t = 0;
  for (let k = 1; t < end; k++) {
    t = k % 5 === 0 ? Math.ceil(t / 10) * 10 + 10 : t + ((k * 7.31) % 23) + 0.001;
    out.push(Math.min(t, end));
  }
  return out;
}

test('forEachTick yields each tick in exactly one of adjacent intervals', () => {
  const whole: number[] = [];
  forEachTick(1000 / 24, 3.3, 0, 5000, (k) => whole.push(k));
  assert.equal(whole.length, Math.ceil((5000 - 3.3) / (1000 / 24)));
  const pieces: number[] = [];
  const c = cuts(5000);
  for (let i = 0; i + 1 < c.length; i++) forEachTick(1000 / 24, 3.3, c[i], c[i + 1], (k) => pieces.push(k));
  assert.deepEqual(pieces, whole);
});

test('forEachTick includes a tick at the interval start and excludes one at its end', () => {
  const ks: number[] = [];
  forEachTick(100, 0, 100, 300, (k, t) => ks.push(k, t));
  assert.deepEqual(ks, [1, 100, 2, 200]);
});

test('forEachPoissonEvent: events are split between pieces, never repeated or lost', () => {
  const proc = { seed: 42, stream: 3, ratePerSec: 700, slotMs: 10 };
  const whole: Array<[number, number]> = [];
  forEachPoissonEvent(proc, 0, 3000, (t, key) => whole.push([t, key]));
  assert.ok(Math.abs(whole.length - 2100) < 250, `about 2100 events, got ${whole.length}`);
  const pieces: Array<[number, number]> = [];
  const c = cuts(3000);
  for (let i = 0; i + 1 < c.length; i++) forEachPoissonEvent(proc, c[i], c[i + 1], (t, key) => pieces.push([t, key]));
  // Within a slot events come in draw order, not time order.
  const byTime = (a: [number, number], b: [number, number]): number => a[0] - b[0] || a[1] - b[1];
  assert.deepEqual(pieces.sort(byTime), whole.sort(byTime));
  for (let i = 1; i < whole.length; i++) assert.notEqual(whole[i][1], whole[i - 1][1]);
});

test('forEachPoissonEvent keeps the rate for slow processes too', () => {
  let n = 0;
  forEachPoissonEvent({ seed: 1, stream: 1, ratePerSec: 0.5, slotMs: 1000 }, 0, 2_000_000, () => n++);
  assert.ok(Math.abs(n - 1000) < 120, `about 1000 events, got ${n}`);
});

test('spreadRange partitions the items of a burst across adjacent intervals', () => {
  const n = 338;
  const c = cuts(200);
  let next = 0;
  for (let i = 0; i + 1 < c.length; i++) {
    const [a, b] = spreadRange(40.5, 25, n, c[i], c[i + 1]);
    if (b > a) {
      assert.equal(a, next);
      next = b;
    }
  }
  assert.equal(next, n);
  assert.deepEqual(spreadRange(40.5, 0, n, 40, 41), [0, n]);
  assert.deepEqual(spreadRange(40.5, 0, n, 41, 50), [0, 0]);
});

test('hashes differ by seed, stream and index, including above 2^32', () => {
  const h = new Set([hashSeed(1, 1, 1), hashSeed(2, 1, 1), hashSeed(1, 2, 1), hashSeed(1, 1, 2), hashSeed(1 + 2 ** 32, 1, 1), hashSeed(1, 1, 1 + 2 ** 32)]);
  assert.equal(h.size, 6);
  const counts = new Array<number>(8).fill(0);
  for (let k = 0; k < 8000; k++) counts[keyInt(hashSeed(9, 9, k), 0, 8)]++;
  for (const c of counts) assert.ok(c > 850 && c < 1150, `bucket count ${c}`);
});
