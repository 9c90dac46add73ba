import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PageSet } from '../../src/core/pageset.ts';
import { createWorkload, WORKLOAD_NAMES } from '../../src/sim/workloads/index.ts';
import type { Workload } from '../../src/sim/workload.ts';

const geometry = { pageSize: 4096, pageCount: 65536 };

function written(w: Workload, from: number, to: number): PageSet {
  const s = new PageSet(w.geometry.pageCount);
  w.writes(from, to, s);
  return s;
}

function writtenInSteps(w: Workload, cuts: readonly number[]): PageSet {
  const s = new PageSet(w.geometry.pageCount);
  for (let i = 0; i + 1 < cuts.length; i++) w.writes(cuts[i], cuts[i + 1], s);
  return s;
}

test('every registered workload is the six the design names', () => {
  assert.deepEqual([...WORKLOAD_NAMES].sort(), ['audio', 'hotspot', 'idle', 'movie', 'text-editing', 'uniform']);
});

for (const name of WORKLOAD_NAMES) {
  test(`${name}: same seed, same interval → same pages, also from a fresh instance`, () => {
    const a = createWorkload(name, { geometry, seed: 7 });
    const b = createWorkload(name, { geometry, seed: 7 });
    const x = written(a, 1234, 9876);
    assert.ok(x.equals(written(a, 1234, 9876)));
    assert.ok(x.equals(written(b, 1234, 9876)));
    assert.ok(a.initialNonZero().words().every((v, i) => v === b.initialNonZero().words()[i]));
  });

  test(`${name}: an interval asked in pieces gives the same union as asked whole`, () => {
    const w = createWorkload(name, { geometry, seed: 11 });
    const whole = written(w, 0, 20_000);
    assert.ok(whole.count() > 0, 'writes something in 20 s');
    const halves = writtenInSteps(w, [0, 10_000, 20_000]);
    assert.ok(halves.equals(whole), 'two halves');
    // Irregular cuts, fractional times, and many tiny steps around slot boundaries.
    const cuts = [0];
    let t = 0;
    let k = 1;
    while (t < 20_000) {
      t = Math.min(20_000, t + ((k * 37.3) % 211) + 0.01);
      cuts.push(t);
      k++;
    }
    assert.ok(writtenInSteps(w, cuts).equals(whole), 'irregular cuts');
    const fine: number[] = [];
    for (let ms = 0; ms <= 20_000; ms += 2.5) fine.push(ms);
    assert.ok(writtenInSteps(w, fine).equals(whole), '2.5 ms steps');
  });

  test(`${name}: the order of the calls does not matter`, () => {
    const w = createWorkload(name, { geometry, seed: 5 });
    const later = written(w, 5_000, 6_000);
    written(w, 0, 5_000);
    assert.ok(written(w, 5_000, 6_000).equals(later));
  });

  test(`${name}: different seeds give different pages`, () => {
    const a = written(createWorkload(name, { geometry, seed: 1 }), 0, 10_000);
    const b = written(createWorkload(name, { geometry, seed: 2 }), 0, 10_000);
    assert.ok(!a.equals(b));
  });

  test(`${name}: every written page is non-zero at start`, () => {
    const w = createWorkload(name, { geometry, seed: 3 });
    const nz = w.initialNonZero();
    const all = written(w, 0, 60_000);
    assert.equal(all.difference(nz).count(), 0);
    const frac = nz.count() / geometry.pageCount;
    assert.ok(frac >= 0.4 && frac <= 1, `non-zero fraction ${frac}`);
  });

  test(`${name}: empty and reversed intervals write nothing`, () => {
    const w = createWorkload(name, { geometry, seed: 3 });
    assert.equal(written(w, 500, 500).count(), 0);
    assert.equal(written(w, 900, 100).count(), 0);
  });
}
