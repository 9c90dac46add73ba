import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildReport, writeReport } from '../../src/lab/report/build.ts';
import { makeResults } from '../../src/engine/results-file.ts';
import { simulateForResults } from '../../src/lab/results-build.ts';
import { scratchDir } from '../helpers/scratch.ts';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

test('the report renders in headless Chromium: every chart has marks, no console errors, no requests', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium, or scripts/install-system-deps.sh)` }, async () => {
  const { chromium } = await import('playwright-core');
  const dir = scratchDir('report-browser-');
  // Real simulated runs of the paper's policies on a small guest (fast), written and read as a results file would be.
  const small = { geometry: { pageSize: 4096, pageCount: 8192 }, link: { bandwidthBytesPerSec: 12.5e6, rttMs: 1 }, launchAtMs: 4000, epochMs: 100 };
  const runs = ['text-editing', 'audio'].flatMap((workload) => ['presync-naive', 'presync-slowstart', 'presync', 'oracle'].map((policy) => simulateForResults({ ...small, workload, policy, seed: 1 })));
  const report = await buildReport([{ source: 'sim.json', results: makeResults({ kind: 'sim', createdBy: 'report-browser test', runs }) }]);
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
    assert.deepEqual(errors, [], 'no console errors');
    assert.deepEqual(requests.filter((u) => !u.startsWith('file:')), [], 'the page makes no network request');
    const shot = join(dir, 'report.png');
    await page.screenshot({ path: shot, fullPage: false });
    const png = readFileSync(shot);
    assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    assert.ok(statSync(shot).size > 10_000);
  } finally {
    await context.close();
  }
});
