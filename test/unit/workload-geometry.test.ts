import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PageSet } from '../../src/core/pageset.ts';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { createWorkload, WORKLOAD_NAMES, WORKLOADS } from '../../src/sim/workloads/index.ts';
import { placeRegions } from '../../src/sim/workloads/layout.ts';

const shapes = [
  { pageSize: 4096, pageCount: 64 },
  { pageSize: 4096, pageCount: 1 },
  { pageSize: 4096, pageCount: 7 },
  { pageSize: 512, pageCount: 1000 },
  { pageSize: 65536, pageCount: 4096 },
  { pageSize: 4096, pageCount: 65537 },
];

for (const name of WORKLOAD_NAMES) {
  test(`${name}: works in tiny and odd guests, writes only non-zero pages`, () => {
    for (const geometry of shapes) {
      const w = createWorkload(name, { geometry, seed: 3 });
      assert.equal(w.geometry, geometry);
      const nz = w.initialNonZero();
      assert.equal(nz.size, geometry.pageCount);
      assert.ok(nz.count() >= 1);
      const all = new PageSet(geometry.pageCount);
      for (let t = 0; t < 30_000; t += 100) w.writes(t, t + 100, all);
      assert.ok(all.count() > 0, `${geometry.pageCount}×${geometry.pageSize}: writes something`);
      assert.equal(all.difference(nz).count(), 0, `${geometry.pageCount}×${geometry.pageSize}: writes only non-zero pages`);
      const whole = new PageSet(geometry.pageCount);
      w.writes(0, 30_000, whole);
      assert.ok(whole.equals(all), `${geometry.pageCount}×${geometry.pageSize}: split == whole`);
    }
  });

  test(`${name}: describe() names the pattern, initialNonZero() is a copy`, () => {
    const w = createWorkload(name, { geometry: { pageSize: 4096, pageCount: 1024 }, seed: 1 });
    assert.ok(w.describe().length > 20);
    assert.equal(w.name, name);
    const a = w.initialNonZero() as PageSet;
    const before = a.count();
    a.clear();
    assert.equal(w.initialNonZero().count(), before);
  });

  test(`${name}: every option has a default inside its range`, () => {
    for (const [key, spec] of Object.entries(WORKLOADS[name].options)) {
      assert.ok(spec.default >= spec.min && spec.default <= spec.max, key);
      assert.ok(spec.doc.length > 5, key);
      createWorkload(name, { geometry: { pageSize: 4096, pageCount: 256 }, seed: 1, options: { [key]: spec.max } });
      createWorkload(name, { geometry: { pageSize: 4096, pageCount: 256 }, seed: 1, options: { [key]: spec.min } });
    }
  });
}

function rejects(fn: () => unknown, code: string, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof PresyncError && e.code === code && re.test(e.message));
}

test('bad names, options, geometry and arguments are rejected with stable codes', () => {
  const geometry = { pageSize: 4096, pageCount: 64 };
  rejects(() => createWorkload('nope', { geometry, seed: 1 }), ErrorCodes.BAD_ARGUMENT, /unknown workload "nope".*text-editing/);
  rejects(() => createWorkload('toString', { geometry, seed: 1 }), ErrorCodes.BAD_ARGUMENT, /unknown workload/);
  rejects(() => createWorkload('uniform', { geometry, seed: 1, options: { pagePerSec: 5 } }), ErrorCodes.BAD_ARGUMENT, /no option "pagePerSec".*pagesPerSec/);
  rejects(() => createWorkload('uniform', { geometry, seed: 1, options: { pagesPerSec: -1 } }), ErrorCodes.BAD_ARGUMENT, /pagesPerSec must be/);
  rejects(() => createWorkload('movie', { geometry, seed: 1, options: { framePool: 2.5 } }), ErrorCodes.BAD_ARGUMENT, /framePool must be an integer/);
  rejects(() => createWorkload('audio', { geometry, seed: 1, options: { pcmRingMs: Number.NaN } }), ErrorCodes.BAD_ARGUMENT, /pcmRingMs/);
  rejects(() => createWorkload('idle', { geometry: { pageSize: 4096, pageCount: 0 }, seed: 1 }), ErrorCodes.GEOMETRY, /pageCount/);
  rejects(() => createWorkload('idle', { geometry: { pageSize: 0, pageCount: 8 }, seed: 1 }), ErrorCodes.GEOMETRY, /pageSize/);
  rejects(() => createWorkload('idle', { geometry, seed: 0.5 }), ErrorCodes.BAD_ARGUMENT, /seed/);
  const w = createWorkload('idle', { geometry, seed: 1 });
  rejects(() => w.writes(0, 100, new PageSet(65)), ErrorCodes.GEOMETRY, /65 pages/);
  rejects(() => w.writes(0, Number.POSITIVE_INFINITY, new PageSet(64)), ErrorCodes.BAD_ARGUMENT, /finite/);
});

test('placeRegions: regions are disjoint, inside the guest, seeded, and shrink to fit', () => {
  const req = [
    { name: 'a', pages: 100 },
    { name: 'b', pages: 50 },
    { name: 'c', pages: 10 },
  ];
  const l1 = placeRegions(1000, 1, req, 300);
  const l2 = placeRegions(1000, 2, req, 300);
  const seen = new PageSet(1000);
  for (const r of l1.regions.values()) {
    for (let p = r.start; p < r.start + r.pages; p++) {
      assert.ok(!seen.has(p), `page ${p} in two regions`);
      seen.add(p);
    }
  }
  assert.equal(l1.nonZero.count(), 460);
  assert.notDeepEqual([...l1.regions.values()], [...l2.regions.values()]);
  assert.deepEqual([...placeRegions(1000, 1, req, 300).regions.values()], [...l1.regions.values()]);
  const tiny = placeRegions(16, 1, req);
  const total = [...tiny.regions.values()].reduce((a, r) => a + r.pages, 0);
  assert.ok(total <= 16);
  for (const r of tiny.regions.values()) assert.ok(r.pages >= 1 && r.start + r.pages <= 16);
  const pinned = placeRegions(1000, 5, req, 0, true);
  assert.equal(pinned.region('a').start, 0);
});
