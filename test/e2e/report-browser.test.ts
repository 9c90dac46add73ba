import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildReport, loadResultsFiles, writeReport } from '../../src/lab/report/build.ts';
import { makeResults } from '../../src/engine/results-file.ts';
import { simulateForResults } from '../../src/lab/results-build.ts';
import { scratchDir } from '../helpers/scratch.ts';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// results/qemu-bench.json as recorded on 2026-11-29 (series removed): results/ may be re-measured, this keeps its failures.
const QEMU_BENCH = join(import.meta.dirname, '..', 'fixtures', 'qemu-bench-guest-failed.json');

test('the report renders in headless Chromium: every chart has marks, the timeline a row per migration, failed guest checks in red; no console errors, no requests', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium, or scripts/install-system-deps.sh)` }, async () => {
  const { chromium } = await import('playwright-core');
  const dir = scratchDir('report-browser-');
  // Real simulated runs of the paper's policies on a small guest (fast), written and read as a results file would be.
  const small = { geometry: { pageSize: 4096, pageCount: 8192 }, link: { bandwidthBytesPerSec: 12.5e6, rttMs: 1 }, launchAtMs: 4000, epochMs: 100 };
  const runs = ['text-editing', 'audio'].flatMap((workload) => ['presync-naive', 'presync-slowstart', 'presync', 'oracle'].map((policy) => simulateForResults({ ...small, workload, policy, seed: 1 })));
  // And a recorded QEMU bench: real runs, three stock guests failed their check after migrating.
  const bench = loadResultsFiles([QEMU_BENCH]);
  const report = await buildReport([{ source: 'sim.json', results: makeResults({ kind: 'sim', createdBy: 'report-browser test', runs }) }, ...bench]);
  const htmlPath = join(dir, 'report.html');
  writeReport(report, htmlPath);

  const userDataDir = scratchDir('report-browser-profile-');
  const context = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1200, height: 900 } });
  try {
    const page = await context.newPage();
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(pathToFileURL(htmlPath).href, { waitUntil: 'load' });
    const charts = await page.$$eval('figure.chart', (figs) =>
      figs.map((f) => {
        const svg = f.querySelector('svg');
        const box = svg?.getBoundingClientRect();
        return {
          id: f.id,
          width: box?.width ?? 0,
          height: box?.height ?? 0,
          marks: svg ? svg.querySelectorAll('g.mark-line path, g.mark-rect path, g.mark-rule line, g.mark-rect rect').length : 0,
          texts: svg ? svg.querySelectorAll('text').length : 0,
        };
      }),
    );
    assert.deepEqual(charts.map((c) => c.id), report.charts.map((c) => c.id));
    assert.ok(charts.length >= 5, `charts: ${charts.map((c) => c.id).join(', ')}`);
    for (const c of charts) {
      assert.ok(c.width > 100 && c.height > 100, `${c.id} is laid out (${c.width}×${c.height})`);
      assert.ok(c.marks > 0, `${c.id} has data marks`);
      assert.ok(c.texts > 0, `${c.id} has axis text`);
    }
    // The timeline: a labelled row per migration, phase bars, a red pause outline per finished run, failures in red.
    const timeline = await page.$eval('figure#chart-timeline svg', (svg) => {
      const labels = [...svg.querySelectorAll('g.role-axis-label text')].map((t) => ({ text: t.textContent ?? '', fill: t.getAttribute('fill') ?? '' }));
      const bars = [...svg.querySelectorAll('g.mark-rect path')].map((p) => ({ label: p.getAttribute('aria-label') ?? '', stroke: p.getAttribute('stroke') ?? '', w: p.getBoundingClientRect().width }));
      const texts = [...svg.querySelectorAll('g.mark-text text')].map((t) => ({ text: t.textContent ?? '', fill: getComputedStyle(t).fill }));
      const box = svg.getBoundingClientRect();
      return { labels, bars, texts, width: box.width, height: box.height };
    });
    const allRuns = [...runs, ...bench[0].results.runs];
    assert.ok(timeline.height > allRuns.length * 12, `the timeline is tall enough for ${allRuns.length} rows (${timeline.height})`);
    const pauses = timeline.bars.filter((b) => b.stroke === '#b00000');
    assert.equal(pauses.length, allRuns.filter((r) => r.summary.downtimeMs !== null && r.summary.launchToRunningMs !== null).length, 'one pause outline per finished run');
    for (const r of allRuns) assert.ok(timeline.bars.some((b) => b.label.includes(`row: ${r.label};`) && /phase: /.test(b.label) && b.w > 0), `${r.label} has phase bars`);
    const phases = new Set(timeline.bars.map((b) => /phase: ([^;]+)/.exec(b.label)?.[1]).filter((p) => p !== undefined));
    for (const p of ['live rounds', 'final scan & residual', 'verify', 'device state', 'target start', 'pre-copy rounds', 'stop & copy']) assert.ok(phases.has(p), `phase ${p} drawn`);
    const failedStock = bench[0].results.runs.filter((r) => r.summary.guestOk === false);
    assert.ok(failedStock.length > 0, 'the bench file has failed guest checks');
    const failedTexts = timeline.texts.filter((t) => t.text.startsWith('✗ guest check failed'));
    assert.equal(failedTexts.length, failedStock.length);
    for (const t of failedTexts) assert.equal(t.fill, 'rgb(176, 0, 0)', 'failure text is red');
    assert.equal(timeline.labels.filter((l) => l.fill === '#b00000').length, failedStock.length, 'the failed runs are labelled in red');

    // The runs table lists each of them as a failure, in red, with the reason below.
    for (const r of failedStock) {
      const cells = await page.locator('table.runs tr', { hasText: r.label }).first().locator('td').allInnerTexts();
      assert.equal(cells[0], r.label);
      assert.equal(cells[3], 'guest check failed', `${r.label}: ${cells.join(' | ')}`);
      assert.equal(cells[4], 'failed');
      const color = await page.locator('table.runs tr', { hasText: r.label }).first().locator('td').nth(3).evaluate((td) => getComputedStyle(td).color);
      assert.equal(color, 'rgb(176, 0, 0)');
      assert.ok(await page.locator('ul.failures li', { hasText: r.label }).first().isVisible());
    }
    assert.equal(await page.locator('table.runs td', { hasText: /^done$/ }).count(), allRuns.length - failedStock.length, 'every other run is done');

    assert.deepEqual(errors, [], 'no console errors');
    assert.deepEqual(requests.filter((u) => !u.startsWith('file:')), [], 'the page makes no network request');
    const shot = join(dir, 'report.png');
    await page.screenshot({ path: shot, fullPage: false });
    const png = readFileSync(shot);
    assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    assert.ok(statSync(shot).size > 10_000);
    // The timeline figure as a picture, as a reader sees it.
    const tlShot = join(dir, 'timeline.png');
    await page.locator('figure#chart-timeline').screenshot({ path: tlShot });
    assert.ok(statSync(tlShot).size > 10_000);
  } finally {
    await context.close();
  }
});
