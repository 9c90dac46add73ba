import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PageSet } from '../../src/core/pageset.ts';
import { createWorkload, measureDirtyRate, WORKLOAD_NAMES, WORKLOADS } from '../../src/sim/workloads/index.ts';

const geometry = { pageSize: 4096, pageCount: 65536 };

for (const name of WORKLOAD_NAMES) {
  test(`${name}: dirty rate with defaults in a 256 MiB guest is within the documented range`, () => {
    const [lo, hi] = WORKLOADS[name].dirtyPagesPerSec;
    for (const seed of [1, 2, 3]) {
      const r = measureDirtyRate(createWorkload(name, { geometry, seed }), 60_000, 1000);
      assert.ok(r.pagesPerSec >= lo && r.pagesPerSec <= hi, `seed ${seed}: ${r.pagesPerSec.toFixed(1)} pages/s not in [${lo}, ${hi}]`);
    }
  });
}

test('the three paper workloads are ordered idle < audio < text-editing < movie', () => {
  const rate = (n: string): number => measureDirtyRate(createWorkload(n, { geometry, seed: 9 })).pagesPerSec;
  const [i, a, t, m] = ['idle', 'audio', 'text-editing', 'movie'].map(rate);
  assert.ok(i < a && a < t && t < m, `${i} ${a} ${t} ${m}`);
});

test('options change the rate the way they say', () => {
  const slow = measureDirtyRate(createWorkload('uniform', { geometry, seed: 1, options: { pagesPerSec: 500 } }));
  assert.ok(Math.abs(slow.pagesPerSec - 500) < 40, `${slow.pagesPerSec}`);
  const fps = (f: number): number => measureDirtyRate(createWorkload('movie', { geometry, seed: 1, options: { fps: f } }), 10_000, 100).pagesPerSec;
  // Per 100 ms epoch: 2.4 vs 4.8 decoded frames of 338 pages; both RGBA buffers (1800 pages) either way.
  const ratio = fps(48) / fps(24);
  assert.ok(ratio > 1.2 && ratio < 1.5, `ratio ${ratio}`);
});

/** Pages written in at least `min` of the 100 ms epochs of a 60 s run. */
function rewritten(name: string, min: number): { hot: number; once: number } {
  const w = createWorkload(name, { geometry, seed: 4 });
  const counts = new Uint16Array(geometry.pageCount);
  const s = new PageSet(geometry.pageCount);
  for (let t = 0; t < 60_000; t += 100) {
    s.clear();
    w.writes(t, t + 100, s);
    s.forEach((p) => counts[p]++);
  }
  let hot = 0;
  let once = 0;
  for (const c of counts) {
    if (c >= min) hot++;
    if (c === 1) once++;
  }
  return { hot, once };
}

test('movie: heavy writes concentrate on a hot set of a few thousand pages; the stream is written once', () => {
  const { hot, once } = rewritten('movie', 100);
  // 6 YUV frames × 338 + 2 RGBA buffers × 900 = 3828 pages, plus PCM/DMA/decoder rings.
  assert.ok(hot >= 3800 && hot <= 4000, `hot ${hot}`);
  // Read-ahead: 60 s × 1 MB/s = 14 650 pages written exactly once.
  assert.ok(once >= 14_000, `once ${once}`);
});

test('audio: the PCM and DMA rings and the decoder state are the hot set', () => {
  // Each ring page is rewritten every 500 ms (PCM) or 370 ms (DMA): in ≥ 100 of 600 epochs.
  const { hot } = rewritten('audio', 100);
  assert.ok(hot >= 22 + 16 + 8 && hot <= 60, `hot ${hot}`);
});

test('text-editing: autosave makes bursts of about a thousand pages every 8 s', () => {
  const w = createWorkload('text-editing', { geometry, seed: 2, options: { scrollsPerSec: 0 } });
  const perSecond: number[] = [];
  for (let t = 0; t < 40_000; t += 1000) {
    const s = new PageSet(geometry.pageCount);
    w.writes(t, t + 1000, s);
    perSecond.push(s.count());
  }
  const bursts = perSecond.filter((c) => c > 500).length;
  const quiet = perSecond.filter((c) => c < 200).length;
  assert.ok(bursts >= 4 && bursts <= 10, `bursts ${bursts}: ${perSecond.join(' ')}`);
  assert.ok(quiet >= 25, `quiet ${quiet}`);
});
