import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/cli/main.ts';
import type { CommandIO } from '../../src/cli/io.ts';
import { PageSet } from '../../src/core/pageset.ts';
import { collectRuns, heatmaps, launchMsOf, PAPER_SOURCE_LABEL, qemuBars, reductionRows, residualRows, trafficRows, windowRows, type LoadedResults } from '../../src/lab/report/data.ts';
import { buildReport } from '../../src/lab/report/build.ts';
import { makeResults, writeResults, type ResultRun } from '../../src/engine/results-file.ts';
import { simulateForResults } from '../../src/lab/results-build.ts';
import { TraceWriter } from '../../src/sim/trace.ts';
import { scratchDir } from '../helpers/scratch.ts';

const small = { geometry: { pageSize: 4096, pageCount: 4096 }, link: { bandwidthBytesPerSec: 12.5e6, rttMs: 1 }, launchAtMs: 3000, epochMs: 100 };
const POLICIES = ['presync-naive', 'presync', 'oracle'];

function simSet(): LoadedResults {
  const runs = ['text-editing', 'movie'].flatMap((workload) => POLICIES.map((policy) => simulateForResults({ ...small, workload, policy, seed: 1 })));
  return { source: 'sim.json', results: makeResults({ kind: 'sim', createdBy: 'test', runs }) };
}

function qemuSet(): LoadedResults {
  // Shaped like `presync bench qemu --out`: real runs, stock QEMU beside presync.
  const run = (policy: string, launchToRunningMs: number, downtimeMs: number): ResultRun => ({
    label: `movie · ${policy}`,
    workload: 'movie',
    policy,
    seed: null,
    shell: 'real',
    summary: { outcome: 'done', launchToRunningMs, downtimeMs, presyncBytes: 1, finalBytes: 2, verified: true },
    series: [],
  });
  return { source: 'qemu.json', results: makeResults({ kind: 'qemu-bench', createdBy: 'test', runs: [run('qemu-stock', 7200, 310), run('presync', 640, 180)] }) };
}

const sim = simSet();

test('chart data: traffic, window, residual with launch, heatmap per workload', () => {
  const runs = collectRuns([sim]);
  assert.deepEqual([...new Set(runs.map((r) => r.series))], POLICIES);
  const traffic = trafficRows(runs);
  const naive = runs.find((r) => r.run.policy === 'presync-naive' && r.run.workload === 'movie')!;
  const sent = naive.run.series.reduce((a, p) => a + p.sentBytes, 0);
  const drawn = traffic.filter((t) => t.series === 'presync-naive' && t.workload === 'movie').reduce((a, t) => a + (t.mbitPerSec * 1e6 * 0.5) / 8, 0);
  assert.ok(Math.abs(drawn - sent) < 1, 'binned rates add up to the bytes sent');
  const win = windowRows(runs);
  assert.ok(win.length > 0 && win.every((w) => w.series === 'presync'), 'only the slow-start policy has a window');
  const res = residualRows(runs);
  assert.equal(res.launches.length, runs.length);
  assert.ok(res.launches.every((l) => l.tS === 3));
  assert.equal(launchMsOf({ ...naive.run, launchAtMs: undefined }), naive.run.series.filter((p) => p.phase === 'presync').at(-1)!.tMs);
  const heat = heatmaps(runs);
  assert.deepEqual(heat.map((h) => h.workload), ['text-editing', 'movie']);
  assert.ok(heat.every((h) => h.cells.length > 0 && h.cells.every((c) => c.pages > 0)));
});

test('reduction bars: measured against naive, with the paper figure beside', () => {
  const rows = reductionRows([sim], collectRuns([sim]));
  const te = rows.filter((r) => r.workload === 'text-editing');
  assert.deepEqual(te.map((r) => r.source), [PAPER_SOURCE_LABEL, 'presync', 'oracle']);
  assert.equal(te[0].percent, 50.5);
  const movie = rows.find((r) => r.workload === 'movie' && r.source === 'presync')!;
  const byPolicy = (p: string) => sim.results.runs.find((r) => r.workload === 'movie' && r.policy === p)!.summary.presyncBytes;
  assert.ok(Math.abs(movie.percent - 100 * (1 - byPolicy('presync') / byPolicy('presync-naive'))) < 1e-9);
  // A paper table, when given, is used instead of the runs.
  const table: LoadedResults = { source: 't.json', results: makeResults({ kind: 'paper', createdBy: 't', runs: [], table: [{ section: 'table', workload: 'audio', policy: 'presync', reduction: 0.7 }] }) };
  assert.deepEqual(reductionRows([table], []), [
    { workload: 'audio', source: PAPER_SOURCE_LABEL, percent: 63.9 },
    { workload: 'audio', source: 'presync', percent: 70 },
  ]);
});

test('the report is one self-contained page with every chart drawn', async () => {
  const q = qemuSet();
  assert.equal(qemuBars(collectRuns([q])).length, 4);
  const r = await buildReport([sim, q], { now: new Date(0) });
  const ids = r.charts.map((c) => c.id);
  assert.deepEqual(ids, ['chart-reduction', 'chart-traffic', 'chart-window', 'chart-residual', 'chart-heat-text-editing', 'chart-heat-movie', 'chart-qemu']);
  for (const c of r.charts) {
    assert.match(c.svg, /^<svg/);
    assert.ok(/<path|<rect|<line/.test(c.svg.replace(/<rect width="[\d.]+" height="[\d.]+" fill="white"\/>/, '')), `${c.id} has marks`);
  }
  assert.doesNotMatch(r.html, /<script|<link|<img|@import|url\((?!#)/i, 'no script and no external resource');
  assert.doesNotMatch(r.html.replace(/xmlns(:xlink)?="http:\/\/www\.w3\.org\/[^"]*"/g, ''), /https?:\/\//, 'no network address');
  assert.equal((r.html.match(/<figure /g) ?? []).length, r.charts.length);
  assert.match(r.html, /qemu-stock/);
  assert.deepEqual(r.warnings, []);
  const htmlIds = [...r.html.matchAll(/\bid="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(new Set(htmlIds).size, htmlIds.length, 'ids are unique across the inlined charts');
  for (const m of r.html.matchAll(/url\(#([^)]+)\)/g)) assert.ok(htmlIds.includes(m[1]), `url(#${m[1]}) resolves`);
});

function io(): CommandIO & { o: string; e: string } {
  const x = { o: '', e: '', out: (t: string) => void (x.o += t), err: (t: string) => void (x.e += t) };
  return x;
}

test('presync report and trace replay from the CLI; bad inputs get one-line errors', async () => {
  const dir = scratchDir('lab-report-');
  // A small recorded trace: one hot page range rewritten every epoch, one cold page once.
  const tracePath = join(dir, 't.jsonl.gz');
  const w = await TraceWriter.open(tracePath, { pageSize: 4096, pageCount: 2048, epochMs: 100, source: 'test' });
  for (let t = 100; t <= 2000; t += 100) await w.append(t, PageSet.of(2048, t === 500 ? [7, 100, 101] : [100, 101]));
  await w.close();
  const results = join(dir, 'replay.json');
  let c = io();
  assert.equal(await run(['trace', 'replay', tracePath, '--launch-after', '1500ms', '--policy', 'presync-naive,presync', '--out', results], c), 0, c.e);
  assert.match(c.o, /presync-naive/);
  c = io();
  assert.equal(await run(['report', results, '-o', join(dir, 'r.html'), '--png', join(dir, 'png')], c), 0, c.e);
  const html = readFileSync(join(dir, 'r.html'), 'utf8');
  assert.match(html, /chart-residual/);
  const png = readFileSync(join(dir, 'png', 'chart-residual.png'));
  assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);

  c = io();
  assert.equal(await run(['report', join(dir, 't.jsonl.gz'), '-o', join(dir, 'x.html')], c), 2);
  assert.match(c.e, /PRESYNC_ERR_BAD_ARGUMENT: .*t\.jsonl\.gz: not JSON/);
  assert.doesNotMatch(c.e, /\n\s+at /, 'no stack trace');
  assert.ok(!existsSync(join(dir, 'x.html')));
  c = io();
  assert.equal(await run(['report', results], c), 2);
  assert.match(c.e, /-o report\.html is required/);

  const bad = join(dir, 'bad.jsonl');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(bad, '{"format":"presync-trace/1","pageSize":4096,"pageCount":10,"epochMs":100}\n{"t":5,"dirty":[1]}\n{"t":6,"dirty":[99]}\n');
  c = io();
  assert.equal(await run(['trace', 'replay', bad], c), 1);
  assert.match(c.e, /PRESYNC_ERR_BAD_TRACE: trace line 3/);
  assert.doesNotMatch(c.e, /\n\s+at /, 'no stack trace');
});
