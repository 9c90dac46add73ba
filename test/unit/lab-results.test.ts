import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PresyncError } from '../../src/core/errors.ts';
import { PageSet } from '../../src/core/pageset.ts';
import { makeResults, readResults, RESULTS_FORMAT, writeResults } from '../../src/engine/results-file.ts';
import { simulateForResults } from '../../src/lab/results-build.ts';
import { HeatAccumulator, heatFromWorkload } from '../../src/lab/results-heat.ts';
import { createWorkload } from '../../src/sim/workloads/index.ts';
import { scratchDir } from '../helpers/scratch.ts';

const small = { geometry: { pageSize: 4096, pageCount: 4096 }, link: { bandwidthBytesPerSec: 12.5e6, rttMs: 1 }, launchAtMs: 3000, epochMs: 100 };

test('a simulated run round-trips through a results file', () => {
  const dir = scratchDir('lab-results-');
  const run = simulateForResults({ ...small, workload: 'text-editing', policy: 'presync', seed: 1 });
  assert.equal(run.shell, 'sim');
  assert.equal(run.launchAtMs, 3000);
  assert.ok(run.series.length >= 30, 'one point per presync epoch at least');
  assert.ok(run.series.some((p) => typeof p.diag?.windowBytes === 'number'), 'presync reports its slow-start window');
  assert.ok(run.dirtyHeat && run.dirtyHeat.counts.length > 0);
  const path = join(dir, 'sub', 'r.json');
  writeResults(path, makeResults({ kind: 'sim', createdBy: 'test', params: { a: 1 }, runs: [run] }));
  const back = readResults(path);
  assert.equal(back.format, RESULTS_FORMAT);
  assert.equal(back.runs[0].summary.presyncBytes, run.summary.presyncBytes);
  assert.deepEqual(back.runs[0].series, run.series);
});

function expectBad(path: string, re: RegExp): void {
  assert.throws(
    () => readResults(path),
    (e: unknown) => e instanceof PresyncError && e.code === 'PRESYNC_ERR_BAD_ARGUMENT' && e.message.includes(path) && re.test(e.message),
  );
}

test('a bad results file is rejected naming the file and the bad field', () => {
  const dir = scratchDir('lab-results-');
  const good = makeResults({ kind: 'paper', createdBy: 't', runs: [simulateForResults({ ...small, workload: 'audio', policy: 'presync-naive', seed: 2 })] });
  const bad1 = JSON.parse(JSON.stringify(good));
  bad1.runs[0].summary.presyncBytes = 'lots';
  writeFileSync(join(dir, 'b1.json'), JSON.stringify(bad1));
  expectBad(join(dir, 'b1.json'), /runs\[0\]\.summary\.presyncBytes/);
  const bad2 = JSON.parse(JSON.stringify(good));
  bad2.runs[0].series[5].phase = 'flying';
  writeFileSync(join(dir, 'b2.json'), JSON.stringify(bad2));
  expectBad(join(dir, 'b2.json'), /runs\[0\]\.series\[5\]\.phase/);
  writeFileSync(join(dir, 'b3.json'), JSON.stringify({ ...good, format: 'presync-result/1' }));
  expectBad(join(dir, 'b3.json'), /field format/);
  writeFileSync(join(dir, 'b4.json'), '{"format": ');
  expectBad(join(dir, 'b4.json'), /not valid JSON/);
  expectBad(join(dir, 'missing.json'), /cannot read/);
  // A writer's bug is caught on write, and nothing is left behind.
  assert.throws(() => writeResults(join(dir, 'w.json'), bad1), /runs\[0\]\.summary\.presyncBytes/);
  assert.throws(() => readFileSync(join(dir, 'w.json')));
});

test('heatmap counts pages per region and bin', () => {
  const acc = new HeatAccumulator(4096, 500);
  assert.equal(acc.regionPages, 64);
  assert.equal(acc.regions, 64);
  acc.add(100, PageSet.of(4096, [0, 1, 63, 64, 4095]));
  acc.add(1200, PageSet.of(4096, [130]));
  const h = acc.toJSON();
  assert.equal(h.counts.length, 3);
  assert.equal(h.counts[0][0], 3);
  assert.equal(h.counts[0][1], 1);
  assert.equal(h.counts[0][63], 1);
  assert.deepEqual(h.counts[1], new Array(64).fill(0));
  assert.equal(h.counts[2][2], 1);
  assert.throws(() => acc.add(0, new PageSet(100)), /GEOMETRY|pages/);
});

test('heatmap from a workload sees the writes the workload makes', () => {
  const w = createWorkload('hotspot', { geometry: small.geometry, seed: 3 });
  const h = heatFromWorkload(w, 2000, 500);
  const total = h.counts.flat().reduce((a, b) => a + b, 0);
  let expect = 0;
  for (let t = 0; t < 2000; t += 500) {
    const s = new PageSet(4096);
    w.writes(t, t + 500, s);
    expect += s.count();
  }
  assert.equal(h.counts.length, 4);
  assert.equal(total, expect);
  assert.ok(total > 0);
});
