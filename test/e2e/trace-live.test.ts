/**
 * A trace recorded from a real RAM image while a real process writes it:
 * the recording captures exactly the pages that changed, and replaying it in
 * the simulator (through the CLI) gives the same dirty counts per epoch.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { PageSet } from '../../src/core/pageset.ts';
import { recordImageTrace } from '../../src/cli/commands/trace.ts';
import { readResults } from '../../src/engine/results-file.ts';
import { addRanges, loadTrace } from '../../src/sim/trace.ts';

const ROOT = resolve(import.meta.dirname, '../..');
import { CLI } from '../../src/lab/cli-entry.ts';
const WRITER = join(ROOT, 'test/fixtures/image-writer.mjs');
const PAGE = 4096;
const PAGES = 4096;
const EPOCH_MS = 100;

test('a trace recorded from a live image holds exactly the pages written, and replays with the same dirty counts per epoch', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-trace-live-'));
  const image = join(dir, 'guest.img');
  const report = join(dir, 'report');
  const writer = spawn(process.execPath, [WRITER, '--image', image, '--pages', String(PAGES), '--report', report, '--writes-per-ms', '4'], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 400 && !existsSync(report); i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(existsSync(report), 'writer started');
    // Stopped while the recorder takes its baseline, so the baseline is a known snapshot.
    writer.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 100));
    const baseline = join(dir, 'baseline.img');
    copyFileSync(image, baseline);

    const tracePath = join(dir, 't.jsonl.gz');
    let epochs = 0;
    const rec = await recordImageTrace({
      imagePath: image,
      out: tracePath,
      epochMs: EPOCH_MS,
      durationMs: 2_000,
      onEpoch: () => {
        epochs++;
        if (epochs === 1) writer.kill('SIGCONT');
        // Stopped again well before the end: the last scans see every write.
        if (epochs === 14) writer.kill('SIGSTOP');
      },
    });
    assert.ok(rec.epochs >= 15, `${rec.epochs} epochs recorded`);

    // Ground truth: the pages whose bytes differ between the baseline and the end.
    const before = readFileSync(baseline);
    const after = readFileSync(image);
    const changed = new PageSet(PAGES);
    for (let p = 0; p < PAGES; p++) if (!before.subarray(p * PAGE, (p + 1) * PAGE).equals(after.subarray(p * PAGE, (p + 1) * PAGE))) changed.add(p);
    assert.ok(changed.count() > 100, `the writer changed ${changed.count()} pages`);

    const trace = await loadTrace(tracePath);
    assert.equal(trace.header.pageCount, PAGES);
    const union = new PageSet(PAGES);
    for (const e of trace.epochs) addRanges(union, e.ranges);
    assert.equal(union.count(), changed.count(), 'the trace holds as many pages as changed');
    const missing = changed.clone();
    missing.subtract(union);
    assert.equal(missing.count(), 0, 'every changed page is in the trace');

    // Replay through the CLI, launch after the trace's last line.
    const results = join(dir, 'replay.json');
    const lastT = trace.epochs.at(-1)!.t;
    const launchMs = (Math.floor(lastT / EPOCH_MS) + 2) * EPOCH_MS;
    await promisify(execFile)(process.execPath, [CLI, 'trace', 'replay', tracePath, '--policy', 'presync-naive', '--epoch', `${EPOCH_MS}ms`, '--launch-after', `${launchMs}ms`, '--out', results]);
    const run = readResults(results).runs[0];
    const presync = run.series.filter((p) => p.phase === 'presync');
    assert.equal(presync.length, launchMs / EPOCH_MS);
    let oneLineEpochs = 0;
    for (const point of presync) {
      // The simulator's epoch (tMs − epoch, tMs] holds the trace lines stamped in it.
      const lines = trace.epochs.filter((e) => e.t > point.tMs - EPOCH_MS && e.t <= point.tMs);
      const expected = new PageSet(PAGES);
      for (const e of lines) addRanges(expected, e.ranges);
      assert.equal(point.dirtyPages, expected.count(), `epoch ending at ${point.tMs} ms`);
      if (lines.length === 1) oneLineEpochs++;
    }
    t.diagnostic(`${trace.epochs.length} trace lines, ${changed.count()} pages changed, ${oneLineEpochs} replay epochs held exactly one line`);
    const recorded = trace.epochs.reduce((n, e) => n + (e.ranges.length > 0 ? 1 : 0), 0);
    assert.ok(recorded >= 5, `${recorded} trace lines saw writes`);
  } finally {
    writer.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
