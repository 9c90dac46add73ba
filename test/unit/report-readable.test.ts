import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildReport, loadResultsFiles } from '../../src/lab/report/build.ts';
import { makeResults } from '../../src/engine/results-file.ts';
import { simulateForResults } from '../../src/lab/results-build.ts';

/**
 * What a reader sees, checked on the built page (SVG and HTML), not on the
 * specs: colours, axes, failures, timelines. Input: simulated runs of every
 * paper policy and a recorded QEMU bench (real runs, three of whose stock
 * guests failed their check after the migration).
 */
const ROOT = join(import.meta.dirname, '..', '..');
// results/qemu-bench.json as recorded on 2026-11-29 (series removed): results/ may be re-measured, this keeps its failures.
const QEMU_BENCH = join(ROOT, 'test', 'fixtures', 'qemu-bench-guest-failed.json');
const small = { geometry: { pageSize: 4096, pageCount: 4096 }, link: { bandwidthBytesPerSec: 12.5e6, rttMs: 1 }, launchAtMs: 3000, epochMs: 100 };
const POLICIES = ['presync-naive', 'presync-predict', 'presync-slowstart', 'presync', 'presync-fresh', 'oracle', 'precopy'];

async function report() {
  const runs = ['text-editing', 'movie'].flatMap((workload) => POLICIES.map((policy) => simulateForResults({ ...small, workload, policy, seed: 1 })));
  const sim = { source: 'sim.json', results: makeResults({ kind: 'sim', createdBy: 'test', runs }) };
  return buildReport([sim, ...loadResultsFiles([QEMU_BENCH])]);
}
const built = report();

/** [aria-label, colour] of every data mark of a chart's SVG. */
function marks(svg: string): Array<{ label: string; color: string }> {
  const out: Array<{ label: string; color: string }> = [];
  for (const m of svg.matchAll(/<(?:path|text)\b[^>]*>/g)) {
    const tag = m[0];
    const label = /aria-label="([^"]*)"/.exec(tag)?.[1];
    const color = /\b(?:stroke|fill)="(#[0-9a-fA-F]{6})"/.exec(tag)?.[1];
    if (label !== undefined && color !== undefined) out.push({ label: label.replace(/&amp;/g, '&'), color: color.toLowerCase() });
  }
  return out;
}

/** The tick labels of a chart's axes of one orientation (vega marks each axis group with an aria-label "X-axis …"/"Y-axis …"). */
function axisLabels(svg: string, axis: 'X' | 'Y'): string[] {
  const out: string[] = [];
  const parts = svg.split(/(?=<g class="mark-group role-axis")/);
  for (const part of parts.slice(1)) {
    if (!new RegExp(`^<g class="mark-group role-axis"[^>]*aria-label="${axis}-axis`).test(part)) continue;
    for (const g of part.matchAll(/<g class="mark-text role-axis-label"[^>]*>(.*?)<\/g>/gs)) for (const t of g[1].matchAll(/<text[^>]*>([^<]*)<\/text>/g)) out.push(t[1]);
  }
  return out;
}

/** docs/report.md's palette table: | `policy` | #rrggbb | */
function documentedPalette(): Map<string, string> {
  const doc = readFileSync(join(ROOT, 'docs', 'report.md'), 'utf8');
  return new Map([...doc.matchAll(/^\|\s*`([^`]+)`[^|]*\|\s*(#[0-9a-f]{6})\s*\|/gim)].map((m) => [m[1], m[2].toLowerCase()]));
}

test('one colour per policy across every chart, the one docs/report.md lists', async () => {
  const r = await built;
  const documented = documentedPalette();
  for (const p of [...POLICIES, 'qemu-stock']) assert.ok(documented.has(p), `docs/report.md lists a colour for ${p}`);
  assert.equal(new Set(documented.values()).size, documented.size, 'documented colours are distinct');
  const seen = new Map<string, Set<string>>();
  for (const c of r.charts) {
    for (const m of marks(c.svg)) {
      const policy = /(?:^|; )(?:policy|source): ([^;]+)/.exec(m.label)?.[1]?.replace(/ \(real\)$/, '');
      // Red marks are failures (a ✗ where a run's dot would be), whatever the policy.
      if (policy === undefined || m.color === '#b00000') continue;
      if (!seen.has(policy)) seen.set(policy, new Set());
      seen.get(policy)!.add(`${m.color} (${c.id})`);
    }
  }
  for (const p of [...POLICIES.filter((x) => x !== 'presync-naive'), 'qemu-stock']) assert.ok(seen.has(p), `${p} is drawn`);
  for (const [policy, colors] of seen) {
    const distinct = new Set([...colors].map((c) => c.split(' ')[0]));
    if (!documented.has(policy)) continue;
    assert.deepEqual([...distinct], [documented.get(policy)], `${policy}: ${[...colors].join(', ')}`);
  }
});

/** Axis labels as numbers: 0, decades, and at most one more, the top of the scale. */
function assertLogLabels(labels: readonly string[], decades: readonly number[], what: string): void {
  const values = labels.map((t) => Number(t.replace(/,/g, ''))).filter((v) => Number.isFinite(v));
  for (const d of [0, ...decades]) assert.ok(values.includes(d), `${what} axis has ${d}: ${labels.join(' ')}`);
  const isDecade = (v: number) => v === 0 || Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9;
  const others = [...new Set(values.filter((v) => !isDecade(v)))];
  assert.ok(others.length <= 1, `${what} axis: only decades and the top, not linear ticks: ${labels.join(' ')}`);
  if (others.length === 1) assert.equal(others[0], Math.max(...values), `${what}: the one other label is the top`);
}

test('the residual and traffic axes label decades, not a crowd of linear ticks', async () => {
  const r = await built;
  assertLogLabels(axisLabels(r.charts.find((c) => c.id === 'chart-residual')!.svg, 'Y'), [1, 10, 100, 1000], 'residual');
  assertLogLabels(axisLabels(r.charts.find((c) => c.id === 'chart-traffic')!.svg, 'Y'), [0.1, 1, 10, 100], 'traffic');
});

test('a stock run whose guest failed its check is listed as a failure, not done', async () => {
  const r = await built;
  const row = /<tr[^>]*>(?:(?!<\/tr>).)*text · qemu-stock #1(?:(?!<\/tr>).)*<\/tr>/s.exec(r.html)?.[0];
  assert.ok(row, 'the run is in the runs table');
  assert.match(row, /class="failed"/);
  assert.match(row, /<td class="bad">guest check failed<\/td>/);
  assert.doesNotMatch(row, />done</);
  assert.match(r.html, /text · qemu-stock #1<\/b> <span class="bad">guest check failed<\/span>: target OK 102 does not continue/);
  // The bench's own table: the stock guest check column reads "failed", in red.
  assert.match(r.html, /<th>stock QEMU guest check<\/th>/);
  assert.match(r.html, /<td class="bad">failed<\/td>/);
  // The timeline and the QEMU chart say so too, in red.
  const tl = marks(r.charts.find((c) => c.id === 'chart-timeline')!.svg).filter((m) => m.label.startsWith('row: text · qemu-stock #1; text:'));
  assert.equal(tl.length, 1);
  assert.match(tl[0].label, /✗ guest check failed/);
  assert.equal(tl[0].color, '#b00000');
  const q = marks(r.charts.find((c) => c.id === 'chart-qemu')!.svg).filter((m) => m.color === '#b00000');
  assert.equal(q.length, 6, 'three failed stock runs, each on both panels');
});

test('a timeline for every migration: phases from the QEMU bench breakdown, the pause outlined', async () => {
  const r = await built;
  const svg = r.charts.find((c) => c.id === 'chart-timeline')!.svg;
  const ms = marks(svg);
  const bench = loadResultsFiles([QEMU_BENCH])[0].results.runs;
  for (const run of bench) {
    const mine = ms.filter((m) => m.label.includes(`row: ${run.label};`));
    const phases = new Set(mine.map((m) => /phase: ([^;]+)/.exec(m.label)?.[1]).filter((p) => p !== undefined));
    if (run.policy === 'presync') {
      for (const p of ['live rounds', 'final scan & residual', 'verify', 'device state', 'target start']) assert.ok(phases.has(p), `${run.label} shows ${p}`);
    } else {
      assert.deepEqual([...phases].sort(), ['pre-copy rounds', 'stop & copy'], run.label);
    }
    const pause = mine.filter((m) => m.color === '#b00000' && /toMs/.test(m.label));
    assert.equal(pause.length, 1, `${run.label} has its pause outlined`);
    const [from, to] = [/: ([\d.]+); row/.exec(pause[0].label)![1], /toMs: ([\d.]+)/.exec(pause[0].label)![1]].map(Number);
    assert.ok(Math.abs(to - from - run.summary.downtimeMs!) < 0.1 && Math.abs(to - run.summary.launchToRunningMs!) < 0.1, `${run.label}: pause ${from}..${to}`);
  }
  const simRows = ms.filter((m) => /row: (text-editing|movie) · /.test(m.label) && /phase: /.test(m.label));
  assert.ok(new Set(simRows.map((m) => /row: ([^;]+)/.exec(m.label)![1])).size >= POLICIES.length * 2 - 2, 'simulated runs have rows too');
});
