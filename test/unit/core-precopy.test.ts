import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LiveRounds, QEMU_LIKE_LIVE_ROUNDS } from '../../src/core/live-rounds.ts';
import { PageSet } from '../../src/core/pageset.ts';
import { createPolicy } from '../../src/core/policies/registry.ts';
import type { EpochObservation } from '../../src/core/types.ts';
import { simulate } from '../../src/sim/simulator.ts';
import { syntheticWorkload } from '../helpers/synthetic.ts';

const GBIT = 1e9 / 8;

function obs(stale: PageSet, over: Partial<EpochObservation> = {}): EpochObservation {
  return {
    epoch: 0,
    timeMs: 0,
    epochMs: 100,
    phase: 'launched',
    geometry: { pageSize: 4096, pageCount: stale.size },
    dirty: new PageSet(stale.size),
    stale,
    net: { bandwidthBytesPerSec: GBIT, rttMs: 1, bytesInFlight: 0, offeredBytes: 0, deliveredBytes: 0 },
    guestSlowdown: 0,
    consumed: 0,
    wireBytesPerPage: 4112,
    ...over,
  };
}

test('live rounds: a residual that fits the downtime limit switches over at once (QEMU rule)', () => {
  const lr = new LiveRounds(QEMU_LIKE_LIVE_ROUNDS);
  // 1000 pages ≈ 4.1 MB: at 128 MiB/s that is ~31 ms < 300 ms.
  const d = lr.decide(obs(new PageSet(65536).addRange(0, 999)));
  assert.equal(d.switchover, true);
  assert.equal(d.converged, true);
});

test('live rounds: a large residual starts a round that sends every stale page once', () => {
  const lr = new LiveRounds(QEMU_LIKE_LIVE_ROUNDS);
  const stale = PageSet.full(65536);
  const d1 = lr.decide(obs(stale));
  assert.equal(d1.switchover, false);
  // The list goes as far as the epoch's budget can use (with room), from the lowest page.
  const fits = Math.floor(d1.budgetBytes / 4120);
  assert.ok(d1.send.length >= fits && d1.send.length <= 65536, `${d1.send.length} entries for ${fits} pages of budget`);
  assert.deepEqual([...d1.send.subarray(0, 3)], [0, 1, 2]);
  // The shell got through 10 000 entries; those pages are no longer stale,
  // and page 5 was written again after being sent: it waits for round 2.
  const stale2 = stale.clone();
  for (let p = 0; p < 10_000; p++) stale2.delete(p);
  stale2.add(5);
  const d2 = lr.decide(obs(stale2, { consumed: 10_000 }));
  assert.equal(d2.switchover, false);
  assert.ok(d2.send.length >= Math.min(fits, 65536 - 10_000));
  assert.equal(d2.send[0], 10_000);
  assert.ok(!d2.send.includes(5), 'page 5 waits for the next round');
  assert.equal(lr.rounds, 1);
});

test('live rounds: minRounds forces a live round even when the residual already fits', () => {
  const lr = new LiveRounds({ ...QEMU_LIKE_LIVE_ROUNDS, minRounds: 1 });
  const d = lr.decide(obs(new PageSet(100).addRange(0, 9)));
  assert.equal(d.switchover, false);
  assert.deepEqual([...d.send], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const d2 = lr.decide(obs(new PageSet(100), { consumed: 10 }));
  assert.equal(d2.switchover, true);
});

test('precopy converges on a light workload: downtime under the limit, image verified', () => {
  const workload = syntheticWorkload({ pageCount: 16384, hot: 200, periodMs: 50, randomPerSec: 500, seed: 1 });
  const policy = createPolicy('precopy', { geometry: workload.geometry, seed: 1 });
  const r = simulate({ workload, policy, link: { bandwidthBytesPerSec: GBIT, rttMs: 1 }, launchAtMs: 5000 });
  assert.equal(r.outcome, 'done');
  assert.equal(r.converged, true);
  assert.equal(r.verified, true);
  assert.equal(r.presyncBytes, 0, 'precopy moves nothing before launch');
  assert.ok(r.finalBytes >= 16384 * 4096, 'the whole RAM moves after launch');
  assert.ok(r.downtimeMs !== null && r.downtimeMs < 300, `downtime ${r.downtimeMs}`);
  assert.ok(r.liveRounds >= 1);
});

test('precopy cannot converge when the dirty rate exceeds the bandwidth: it says so and stops', () => {
  // 16 384 hot pages (64 MiB) rewritten every 10 ms on a 100 Mbit/s link.
  const workload = syntheticWorkload({ pageCount: 32768, hot: 16384, periodMs: 10, randomPerSec: 0, seed: 2 });
  const link = { bandwidthBytesPerSec: 100e6 / 8, rttMs: 1 };
  const forced = simulate({ workload, policy: createPolicy('precopy', { geometry: workload.geometry, seed: 2 }, { maxRounds: 5 }), link, launchAtMs: 1000 });
  assert.equal(forced.converged, false);
  assert.equal(forced.liveRounds, 5);
  assert.equal(forced.outcome, 'done');
  assert.equal(forced.verified, true);
  assert.ok(forced.downtimeMs !== null && forced.downtimeMs > 300, `forced downtime ${forced.downtimeMs}`);

  const aborted = simulate({
    workload,
    policy: createPolicy('precopy', { geometry: workload.geometry, seed: 2 }, { maxRounds: 5, onNoConvergence: 'abort' }),
    link,
    launchAtMs: 1000,
  });
  assert.equal(aborted.outcome, 'rolled-back');
  assert.equal(aborted.error?.code, 'PRESYNC_ERR_NO_CONVERGENCE');
  assert.equal(aborted.downtimeMs, null);
});

test('presync-naive keeps the target close: small residual at launch, short launch→running', () => {
  const workload = syntheticWorkload({ pageCount: 16384, hot: 200, periodMs: 50, randomPerSec: 500, seed: 3 });
  const link = { bandwidthBytesPerSec: GBIT, rttMs: 1 };
  const naive = simulate({ workload, policy: createPolicy('presync-naive', { geometry: workload.geometry, seed: 3 }), link, launchAtMs: 5000 });
  const pre = simulate({ workload, policy: createPolicy('precopy', { geometry: workload.geometry, seed: 3 }), link, launchAtMs: 5000 });
  assert.equal(naive.outcome, 'done');
  assert.equal(naive.verified, true);
  assert.ok(naive.residualPagesAtLaunch < 1000, `residual ${naive.residualPagesAtLaunch}`);
  assert.ok(naive.launchToRunningMs! * 5 < pre.launchToRunningMs!, `naive ${naive.launchToRunningMs} vs precopy ${pre.launchToRunningMs}`);
  assert.ok(naive.presyncBytes > 16384 * 4096 * 0.9);
  assert.ok(naive.wastedPages > 0, 'hot pages are resent and wasted');
});
