import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/cli/main.ts';
import type { CommandIO } from '../../src/cli/io.ts';
import { PageSet } from '../../src/core/pageset.ts';
import { collectRuns, heatmaps, launchMsOf, PAPER_SOURCE_LABEL, qemuBars, reductionRows, residualRows, trafficRows, windowRows, type LoadedResults } from '../../src/lab/report/data.ts';
import { buildReport, loadResultsFiles } from '../../src/lab/report/build.ts';
import { columnOf } from '../../src/lab/report/columns.ts';
import { logAxis } from '../../src/lab/report/specs.ts';
import { runStatus } from '../../src/lab/report/status.ts';
import { presyncSecondsOf, segmentsOf, timelines } from '../../src/lab/report/timeline.ts';
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
  assert.deepEqual(ids, ['chart-reduction', 'chart-qemu', 'chart-timeline', 'chart-traffic', 'chart-window', 'chart-residual', 'chart-heat-text-editing', 'chart-heat-movie']);
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
  assert.match(c.e, /PRESYNC_ERR_BAD_ARGUMENT: .*t\.jsonl\.gz: not valid JSON/);
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

function realRun(summary: Record<string, unknown>, o: Partial<ResultRun> = {}): ResultRun {
  return {
    label: 'r',
    workload: 'w',
    policy: 'presync',
    seed: null,
    shell: 'real',
    series: [],
    ...o,
    summary: { outcome: 'done', launchToRunningMs: null, downtimeMs: null, presyncBytes: 0, finalBytes: 0, verified: true, ...summary } as ResultRun['summary'],
  };
}

test('timeline segments: the QEMU bench breakdown, phase times, or the totals alone', () => {
  // As `bench qemu` writes it (text · presync #1 of results/qemu-bench.json).
  const bench = segmentsOf(realRun({ launchToRunningMs: 81.9, downtimeMs: 52.3, launchWaitMs: 0.2, liveRoundsMs: 7.3, freshWatchMs: null, migrateToPreSwitchoverMs: 17.2, finalScanAndResidualMs: 26.6, verifyMs: 5.6, deviceStateMs: 11.6, targetStartConfirmMs: 10.6 }));
  assert.deepEqual(bench.map((s) => s.phase), ['wait for the epoch', 'live rounds', 'QEMU stops the vCPUs', 'final scan & residual', 'verify', 'device state', 'target start']);
  for (let i = 1; i < bench.length; i++) assert.equal(bench[i].fromMs, bench[i - 1].toMs, 'back to back');
  assert.ok(Math.abs(bench.at(-1)!.toMs - 79.1) < 1e-9);
  // As `migrate --out` writes it (phaseAtMs from a real loopback migration).
  const phaseAtMs = { presync: 39.5, launched: 2042.1, 'final-copy': 2471.8, paused: 2474.3, verify: 2476.3, handover: 2479.8, done: 2480.9 };
  const mig = realRun({ launchToRunningMs: 439, downtimeMs: 6.6, phaseAtMs });
  const seg = segmentsOf(mig);
  assert.deepEqual(seg.map((s) => s.phase), ['wait for the epoch', 'live rounds', 'final scan & residual', 'verify', 'target start']);
  assert.ok(Math.abs(seg.at(-1)!.toMs - 439) < 1e-6, 'ends when the guest runs');
  assert.ok(Math.abs(presyncSecondsOf(mig, {})! - 2.0026) < 1e-9);
  // With QEMU's step times (`qemu migrate --out`), its steps are split out.
  const q = segmentsOf(realRun({ launchToRunningMs: 439, downtimeMs: 6.6, phaseAtMs, qemu: { migrateToPreSwitchoverMs: 1.5, continueToCompletedMs: 2 } }));
  assert.deepEqual(q.map((s) => s.phase), ['wait for the epoch', 'live rounds', 'QEMU stops the vCPUs', 'final scan & residual', 'verify', 'device state', 'target start']);
  // Totals only: stock QEMU, simulated runs; a rolled-back run has none.
  assert.deepEqual(segmentsOf(realRun({ launchToRunningMs: 1460, downtimeMs: 200 }, { policy: 'qemu-stock' })), [
    { phase: 'pre-copy rounds', fromMs: 0, toMs: 1260 },
    { phase: 'stop & copy', fromMs: 1260, toMs: 1460 },
  ]);
  assert.deepEqual(segmentsOf(realRun({ outcome: 'rolled-back' })), []);
  assert.equal(presyncSecondsOf(realRun({}, { policy: 'qemu-stock' }), { presyncForMs: 15000 }), null);
  assert.equal(presyncSecondsOf(realRun({}), { presyncForMs: 15000 }), 15);
});

test('timelines: one per run, unique rows, failures and the pause', () => {
  const runs = collectRuns([
    {
      source: 'q.json',
      results: makeResults({
        kind: 'qemu-bench',
        createdBy: 't',
        runs: [
          realRun({ launchToRunningMs: 1460, downtimeMs: 200, guestOk: false, guestCheck: 'target OK 102 does not continue' }, { policy: 'qemu-stock', label: 'x' }),
          realRun({ launchToRunningMs: 1400, downtimeMs: 100 }, { policy: 'qemu-stock', label: 'x' }),
          realRun({ outcome: 'rolled-back', error: { code: 'PRESYNC_ERR_TIMEOUT', message: 'late' } }, { label: 'y' }),
        ],
      }),
    },
  ]);
  const tl = timelines(runs);
  assert.deepEqual(tl.map((t) => t.row), ['x', 'x [2]', 'y']);
  assert.deepEqual(tl[0].status, { ok: false, text: 'guest check failed', detail: 'target OK 102 does not continue' });
  assert.deepEqual(tl[0].pause, { fromMs: 1260, toMs: 1460 });
  assert.equal(tl[1].status.ok, true);
  assert.deepEqual(tl[2].status, { ok: false, text: 'rolled back', detail: 'PRESYNC_ERR_TIMEOUT: late' });
  assert.equal(tl[2].pause, null);
  assert.equal(runStatus(runs[0].run).ok, false);
});

test('log axes tick at 0 and each decade up to a rounded top', () => {
  assert.deepEqual(logAxis(23_000), { top: 30_000, ticks: [0, 1, 10, 100, 1000, 10_000, 30_000] });
  assert.deepEqual(logAxis(999.8, 0.1), { top: 1000, ticks: [0, 0.1, 1, 10, 100, 1000] });
  assert.deepEqual(logAxis(0), { top: 10, ticks: [0, 1, 10] });
});

test('table columns: human headers, units, failed guest checks in red', () => {
  assert.deepEqual([columnOf('stockLaunchToRunningMsMedian').header, columnOf('presyncBytesMedian').header, columnOf('reduction').header], [
    'stock QEMU launch → running, median (ms)',
    'presync sent, median (MiB)',
    'reduction vs naive (%)',
  ]);
  assert.deepEqual(columnOf('presyncBytesMedian').cell(152648348), { text: '145.6', num: true, bad: false });
  assert.deepEqual(columnOf('reduction').cell(0.505), { text: '50.5', num: true, bad: false });
  assert.deepEqual(columnOf('stockGuestOk').cell(false), { text: 'failed', num: false, bad: true });
  // Keys nobody listed still get words and a unit from their suffix.
  assert.equal(columnOf('engineDowntimeMs').header, 'engine downtime (ms)');
  assert.equal(columnOf('fooBytesP95').header, 'foo, p95 (MiB)');
});

test('every results file in results/ still renders, with a timeline row per run', async () => {
  for (const name of ['qemu-bench.json', 'qemu-bench-32mib.json', 'qemu-bench-busy.json']) {
    const files = loadResultsFiles([join(import.meta.dirname, '..', '..', 'results', name)]);
    const r = await buildReport(files);
    assert.deepEqual(r.warnings, [], name);
    const tl = r.charts.find((c) => c.id === 'chart-timeline');
    assert.ok(tl, `${name} has a timeline`);
    for (const run of files[0].results.runs) assert.ok(tl.svg.includes(`row: ${run.label};`), `${name}: ${run.label}`);
  }
});
