/**
 * Screenshots a report page in headless Chromium (the same browser the report
 * test uses): `node --import tsx scripts/report-screenshot.ts report.html out.png [--width 1200] [--height 2400] [--full | --clip Y,HEIGHT | --until CSS | --selector CSS]`.
 * Used for docs/img/report.png; the page is opened from the file, offline.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { width: { type: 'string' }, height: { type: 'string' }, full: { type: 'boolean' }, clip: { type: 'string' }, until: { type: 'string' }, selector: { type: 'string' }, chromium: { type: 'string' } },
});
const [html, out] = positionals;
if (!html || !out) {
  process.stderr.write('usage: scripts/report-screenshot.ts report.html out.png [--width PX] [--height PX] [--full | --clip Y,HEIGHT | --until CSS | --selector CSS]\n');
  process.exit(2);
}
const width = Number(values.width ?? 1200);
const height = Number(values.height ?? 2400);
const profile = mkdtempSync(join(tmpdir(), 'report-shot-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: values.chromium ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width, height },
});
try {
  const page = await context.newPage();
  await page.goto(pathToFileURL(resolve(html)).href, { waitUntil: 'load' });
  if (values.selector !== undefined) {
    await page.locator(values.selector).first().screenshot({ path: out });
  } else if (values.until !== undefined) {
    // From the top of the page to the bottom of the element.
    const box = await page.locator(values.until).first().boundingBox();
    if (box === null) throw new Error(`${values.until} is not on the page`);
    await page.screenshot({ path: out, fullPage: true, clip: { x: 0, y: 0, width, height: Math.ceil(box.y + box.height + 16) } });
  } else if (values.clip !== undefined) {
    const [y, h] = values.clip.split(',').map(Number);
    await page.screenshot({ path: out, fullPage: true, clip: { x: 0, y, width, height: h } });
  } else {
    await page.screenshot({ path: out, fullPage: values.full === true });
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
