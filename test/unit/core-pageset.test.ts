import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PageSet, popcount32 } from '../../src/core/pageset.ts';
import { Rng } from '../../src/core/rng.ts';

/** A reference model: plain JS Set. */
function model(size: number, rng: Rng, n: number): [PageSet, Set<number>] {
  const s = new PageSet(size);
  const m = new Set<number>();
  for (let i = 0; i < n; i++) {
    const p = rng.int(size);
    s.add(p);
    m.add(p);
  }
  return [s, m];
}

test('add/has/delete/count agree with a Set, including the partial last word', () => {
  for (const size of [1, 31, 32, 33, 64, 100, 1000]) {
    const rng = new Rng(size);
    const [s, m] = model(size, rng, size);
    assert.equal(s.count(), m.size);
    for (let p = 0; p < size; p++) assert.equal(s.has(p), m.has(p), `size ${size} page ${p}`);
    const arr = [...s];
    assert.deepEqual(arr, [...m].sort((a, b) => a - b));
    for (const p of arr.slice(0, arr.length >> 1)) {
      s.delete(p);
      m.delete(p);
    }
    assert.equal(s.count(), m.size);
  }
});

test('union, difference, intersection match set algebra', () => {
  const size = 5000;
  const rng = new Rng(7);
  const [a, ma] = model(size, rng, 2000);
  const [b, mb] = model(size, rng, 2000);
  const u = a.union(b);
  const d = a.difference(b);
  const i = a.intersection(b);
  assert.deepEqual([...u], [...new Set([...ma, ...mb])].sort((x, y) => x - y));
  assert.deepEqual([...d], [...ma].filter((x) => !mb.has(x)).sort((x, y) => x - y));
  assert.deepEqual([...i], [...ma].filter((x) => mb.has(x)).sort((x, y) => x - y));
  assert.equal(u.count(), d.count() + b.count());
  // Operands are untouched by the non-mutating forms.
  assert.equal(a.count(), ma.size);
});

test('iteration is in ascending order and toArray matches it', () => {
  const s = PageSet.of(100, [99, 0, 31, 32, 64, 5]);
  assert.deepEqual([...s], [0, 5, 31, 32, 64, 99]);
  assert.deepEqual([...s.toArray()], [0, 5, 31, 32, 64, 99]);
});

test('addRange and ranges round-trip', () => {
  const s = new PageSet(200);
  s.addRange(3, 3).addRange(10, 80).addRange(95, 130).add(199);
  assert.deepEqual(s.ranges(), [
    [3, 3],
    [10, 80],
    [95, 130],
    [199, 199],
  ]);
  assert.equal(s.count(), 1 + 71 + 36 + 1);
});

test('full() has exactly size members, even when size is not a multiple of 32', () => {
  for (const size of [0, 1, 31, 32, 33, 65537]) assert.equal(PageSet.full(size).count(), size);
});

test('out-of-range pages and size mismatches are errors', () => {
  const s = new PageSet(10);
  assert.throws(() => s.add(10), RangeError);
  assert.throws(() => s.add(-1), RangeError);
  assert.throws(() => s.add(1.5), RangeError);
  assert.throws(() => s.addRange(5, 2), RangeError);
  assert.throws(() => s.unionWith(new PageSet(11)), RangeError);
  assert.equal(s.has(10), false);
});

test('popcount32 matches a bit loop', () => {
  const rng = new Rng(3);
  for (let i = 0; i < 1000; i++) {
    const x = rng.nextU32();
    let c = 0;
    for (let b = 0; b < 32; b++) if ((x >>> b) & 1) c++;
    assert.equal(popcount32(x), c);
  }
});

test('one-million-page sets support the operations policies use', () => {
  const size = 1 << 20;
  const a = new PageSet(size).addRange(0, size / 2 - 1);
  const b = new PageSet(size).addRange(size / 4, size - 1);
  assert.equal(a.union(b).count(), size);
  assert.equal(a.intersection(b).count(), size / 4);
  assert.equal(a.difference(b).count(), size / 4);
  assert.equal(a.toArray().length, size / 2);
});
