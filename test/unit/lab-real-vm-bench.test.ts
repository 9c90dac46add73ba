import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import type { BlackoutReport } from '../../src/lab/blackout-client.ts';
import { summarizeRealVm, type RealVmRun } from '../../src/lab/real-vm-bench.ts';

function client(survived: boolean, longest: number): BlackoutReport {
  return { sent: 100, answered: 99, longestGapMs: longest, longestGapStartMs: 0, longestGapEndMs: longest, gaps: [], connectionSurvived: survived, error: survived ? null : 'connection error: ECONNRESET', connectedAtMs: 0, stoppedAtMs: 1000, intervalMs: 5 };
}

function run(kind: 'presync' | 'stock', rep: number, o: { l2r: number; gap: number | null; longest?: number; survived?: boolean; disk?: boolean; guest?: boolean; outcome?: RealVmRun['outcome'] }): RealVmRun {
  return {
    workload: 'text', kind, rep, outcome: o.outcome ?? 'done', error: null,
    launchToRunningMs: o.l2r, downtimeMs: o.l2r / 2, qemuDowntimeMs: null, bytes: 1000, presyncBytes: 0, finalBytes: 0, qemuStreamBytes: 0,
    guest: { ok: o.guest ?? true, reason: '', targetOk: 1, targetFirstHb: 1, lastSourceHb: 0 }, detail: {}, series: [],
    client: client(o.survived ?? true, o.longest ?? o.gap ?? 0), clientGapMs: o.gap,
    disk: { ok: o.disk ?? true, reason: '', targetWritten: 2, targetVerified: 2, lastSourceWritten: 1 }, diskBytes: 0,
  };
}

describe('bench qemu --vm real: summary', () => {
  it('medians of the gap across the pause, not of the longest gap; all-or-nothing flags', () => {
    const runs = [
      run('presync', 0, { l2r: 100, gap: 210, longest: 2000 }),
      run('presync', 1, { l2r: 120, gap: 230 }),
      run('presync', 2, { l2r: 110, gap: 220, disk: false }),
      run('stock', 0, { l2r: 1000, gap: 400 }),
      run('stock', 1, { l2r: 1200, gap: 600, survived: false }),
    ];
    const [w] = summarizeRealVm(['text'], runs);
    assert.equal(w.presyncLaunchToRunningMsMedian, 110);
    assert.equal(w.stockLaunchToRunningMsMedian, 1100);
    assert.equal(w.ratio, 10);
    assert.equal(w.presyncClientGapMsMedian, 220);
    assert.equal(w.presyncClientLongestGapMsMedian, 230);
    assert.equal(w.stockClientGapMsMedian, 500);
    assert.equal(w.connectionSurvived, true);
    assert.equal(w.stockConnectionSurvived, false);
    assert.equal(w.diskVerified, false, 'one presync disk check failed');
    assert.equal(w.stockDiskVerified, true);
    assert.equal(w.guestOk, true);
  });
  it('a failed run fails its kind\'s flags and stays out of the medians', () => {
    const runs = [run('presync', 0, { l2r: 100, gap: 200 }), { ...run('presync', 1, { l2r: 5, gap: null }), outcome: 'failed' as const, client: null, disk: null }];
    const [w] = summarizeRealVm(['text'], runs);
    assert.equal(w.presyncLaunchToRunningMsMedian, 100);
    assert.equal(w.guestOk, false);
    assert.equal(w.connectionSurvived, false);
    assert.equal(w.diskVerified, false);
    assert.equal(w.stockLaunchToRunningMsMedian, null);
    assert.equal(w.stockGuestOk, false, 'no stock run: not OK');
  });
});

describe('bench qemu --vm real: JSON line', () => {
  it('carries the fields the issue names, per workload', async () => {
    const { realVmBenchJson } = await import('../../src/lab/real-vm-bench.ts');
    const runs = [run('presync', 0, { l2r: 100, gap: 210 }), run('stock', 0, { l2r: 1000, gap: 300 })];
    const json = realVmBenchJson({
      network: 'n', versions: 'v',
      options: { reps: 1, memBytes: 1 << 30, presyncForMs: 15000, accel: 'tcg', policy: 'presync', disk: 'shared', stockBandwidthBytesPerSec: 2 ** 40, clientRtoMinMs: null, workloads: ['text'] },
      runs, workloads: summarizeRealVm(['text'], runs),
    });
    assert.equal(json.vm, 'real');
    const [w] = json.workloads as Record<string, unknown>[];
    for (const k of ['workload', 'presyncLaunchToRunningMsMedian', 'stockLaunchToRunningMsMedian', 'ratio', 'presyncDowntimeMsMedian', 'presyncClientGapMsMedian', 'stockClientGapMsMedian', 'connectionSurvived', 'diskVerified', 'guestOk', 'stockGuestOk']) {
      assert.ok(k in w, k);
    }
    assert.equal(w.presyncClientGapMsMedian, 210);
    assert.equal(w.ratio, 10);
    assert.equal(JSON.parse(JSON.stringify(json)).workloads.length, 1);
  });
});
