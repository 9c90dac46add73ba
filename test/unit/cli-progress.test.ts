import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SourceStatus } from '../../src/engine/source-session.ts';
import { BarProgress, formatBar, formatDuration, formatMigrationProgress, MigrationProgressTracker, progressEvent } from '../../src/cli/progress.ts';

function status(elapsedMs: number, stalePages: number, expectedDowntimeMs: number, phase: SourceStatus['phase'] = 'presync', initialCopyDone = true): SourceStatus {
  const pageCount = 1000;
  return {
    phase,
    elapsedMs,
    pageCount,
    inSyncPages: pageCount - stalePages,
    inSyncPercent: ((pageCount - stalePages) / pageCount) * 100,
    stalePages,
    rateBytesPerSec: 1.25e8,
    bandwidthBytesPerSec: 1.25e8,
    presyncBytes: 0,
    finalBytes: 0,
    expectedDowntimeMs,
    epoch: Math.round(elapsedMs / 100),
    pageSize: 4096,
    dirtyPages: 10,
    initialCopyDone,
  };
}

test('in sync never runs backwards while the current share and stale pages do', () => {
  const t = new MigrationProgressTracker();
  const stale = [1000, 600, 200, 50, 400, 30, 700];
  let prev = -1;
  const views = stale.map((s, i) => t.update(status(i * 100, s, s * 0.033 + 1)));
  for (const v of views) {
    assert.ok(v.inSyncPercent >= prev, `${v.inSyncPercent} ≥ ${prev}`);
    prev = v.inSyncPercent;
  }
  assert.equal(views[3].inSyncPercent, 95);
  assert.equal(views[4].inSyncPercent, 95, 'the guest dirtied pages: the high-water mark holds');
  assert.equal(views[4].inSyncNowPercent, 60, 'the current share is reported as it is');
  assert.equal(views[4].stalePages, 400);
  assert.equal(views[5].inSyncPercent, 97);
  assert.equal(views[6].inSyncPercent, 97);
});

test('ETA to launch-ready extrapolates the recent drain and is unknown when not draining', () => {
  const t = new MigrationProgressTracker({ readyDowntimeMs: 300 });
  // 1 ms of downtime per stale page: ready at ≤ 300 stale pages.
  t.update(status(0, 1000, 1000));
  const v = t.update(status(1000, 900, 900));
  assert.equal(v.ready, false);
  assert.ok(v.etaToReadyMs !== null && Math.abs(v.etaToReadyMs - 6000) < 1e-6, `eta ${v.etaToReadyMs}`);
  const ready = t.update(status(2000, 250, 250));
  assert.equal(ready.ready, true);
  assert.equal(ready.etaToReadyMs, 0);
  const t2 = new MigrationProgressTracker();
  t2.update(status(0, 500, 500));
  assert.equal(t2.update(status(1000, 600, 600)).etaToReadyMs, null, 'growing residual: no ETA');
});

test('never launch-ready before the initial copy is done, however short the expected pause', () => {
  const t = new MigrationProgressTracker();
  const copying = t.update(status(100, 5, 1, 'presync', false));
  assert.equal(copying.ready, false);
  assert.match(formatMigrationProgress(copying), /initial copy/);
  assert.doesNotMatch(formatMigrationProgress(copying), /launch-ready/);
  assert.equal(t.update(status(200, 5, 1, 'presync', true)).ready, true);
});

test('the rate is smoothed: one fast epoch after slow ones moves it only part of the way', () => {
  const t = new MigrationProgressTracker({ rateTauMs: 2000 });
  const at = (ms: number, rate: number) => t.update({ ...status(ms, 100, 100), rateBytesPerSec: rate });
  for (let ms = 0; ms <= 2000; ms += 100) at(ms, 5e6);
  const v = at(2100, 4e8);
  assert.ok(v.rateBytesPerSec > 5e6 && v.rateBytesPerSec < 0.1 * 4e8, `smoothed ${v.rateBytesPerSec}`);
  assert.ok(Math.abs(v.dirtyRateBytesPerSec - (10 * 4096 * 1000) / 100) < 1, `dirty rate ${v.dirtyRateBytesPerSec}`);
});

test('the status line carries phase, elapsed, in sync, bytes, rate, ETA, countdown and expected downtime', () => {
  const t = new MigrationProgressTracker();
  t.update(status(0, 1000, 1000));
  const line = formatMigrationProgress(t.update({ ...status(1000, 900, 900), presyncBytes: 3 * 2 ** 20 }, 21_000));
  assert.match(line, /^presync {2}1 s {2}in sync 10\.0 % {2}sent 3 MiB, 3\.52 MiB to go {2}rate 1 Gbit\/s {2}dirty 40 KiB\/s {2}ready in 6 s {2}launch in 20 s {2}downtime if launched now 900 ms$/);
  const launched = formatMigrationProgress(t.update(status(1100, 10, 10, 'launched')));
  assert.doesNotMatch(launched, /ready/);
  const ev = progressEvent(status(1, 2, 3), t.update(status(1200, 10, 10)));
  assert.equal(ev.event, 'progress');
  assert.equal(ev.bytesRemaining, 10 * 4096);
  assert.equal(ev.inSyncPeakPercent, 99);
  assert.equal(ev.ready, true);
});

test('durations and bars format as documented', () => {
  assert.equal(formatDuration(null), '—');
  assert.equal(formatDuration(12.4), '12 ms');
  assert.equal(formatDuration(59_400), '59 s');
  assert.equal(formatDuration(61_000), '1 min 01 s');
  assert.equal(formatDuration(3_660_000), '1 h 01 min');
  assert.equal(formatBar(5, 10, 10, 'x'), '[#####-----]  50 %  5/10  x');
  assert.equal(formatBar(0, 0, 4), '[####] 100 %  0/0');
});

test('bar progress: plain lines per tenth off a terminal, one redrawn line on it', () => {
  const plain: string[] = [];
  const p = new BarProgress((s) => plain.push(s), false, 'bench');
  for (let i = 1; i <= 40; i++) p.update(i, 40);
  assert.equal(plain.length, 11, 'one line when it starts, then one per tenth');
  assert.equal(plain.at(-1), 'bench: 40/40 (100 %)\n');
  assert.ok(plain.every((l) => !l.includes('\r')));
  const tty: string[] = [];
  const b = new BarProgress((s) => tty.push(s), true, 'bench');
  for (let i = 1; i <= 40; i++) b.update(i, 40, i * 50);
  assert.ok(tty.length < 40, 'redraws are throttled');
  assert.ok(tty.every((l) => l.startsWith('\r')));
  assert.ok(tty.at(-1)!.endsWith('\n') && tty.at(-1)!.includes('40/40'), 'the last state is always drawn');
});
