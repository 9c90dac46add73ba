import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LiveRounds, QEMU_LIKE_LIVE_ROUNDS } from '../../src/core/live-rounds.ts';
import { PageSet } from '../../src/core/pageset.ts';
import type { EpochObservation } from '../../src/core/types.ts';

const geometry = { pageSize: 4096, pageCount: 65536 };

function launched(stalePages: number): EpochObservation {
  const stale = new PageSet(geometry.pageCount);
  for (let p = 0; p < stalePages; p++) stale.add(p * 7);
  return {
    epoch: 300,
    timeMs: 30_000,
    epochMs: 100,
    phase: 'launched',
    geometry,
    dirty: new PageSet(geometry.pageCount),
    stale,
    net: { bandwidthBytesPerSec: 125e6, rttMs: 1, bytesInFlight: 0, offeredBytes: 0, deliveredBytes: 0 },
    guestSlowdown: 0,
    consumed: 0,
    wireBytesPerPage: 4120,
  };
}

test('live rounds: minRounds runs a round before pausing, unless the pause expected now is below pauseNowBelowMs', () => {
  const cfg = { ...QEMU_LIKE_LIVE_ROUNDS, minRounds: 1, maxBandwidthBytesPerSec: Infinity };
  // 40 pages ≈ 1.3 ms at 1 Gbit/s + 1 ms RTT.
  const always = new LiveRounds({ ...cfg, pauseNowBelowMs: 0 }).decide(launched(40));
  assert.equal(always.switchover, false, 'pauseNowBelowMs 0: one live round first');
  assert.equal(always.send.length, 40);
  const quick = new LiveRounds({ ...cfg, pauseNowBelowMs: 30 }).decide(launched(40));
  assert.equal(quick.switchover, true, 'a 2 ms pause is taken at once');
  assert.equal(quick.converged, true);
  // 2000 pages ≈ 67 ms: above 30 ms, so the round still runs.
  const big = new LiveRounds({ ...cfg, pauseNowBelowMs: 30 }).decide(launched(2000));
  assert.equal(big.switchover, false);
  assert.equal(big.send.length, 2000);
  // Above the downtime limit nothing changes: rounds until it fits.
  const huge = new LiveRounds({ ...cfg, pauseNowBelowMs: 1e9, downtimeLimitMs: 10 }).decide(launched(2000));
  assert.equal(huge.switchover, false);
});

test("live rounds: an operator's downtime limit in the observation overrides the configured one", () => {
  const cfg = { ...QEMU_LIKE_LIVE_ROUNDS, minRounds: 0, downtimeLimitMs: 300, maxBandwidthBytesPerSec: Infinity };
  // 2000 pages ≈ 67 ms at 1 Gbit/s: fits 300 ms, not 20 ms.
  assert.equal(new LiveRounds(cfg).decide(launched(2000)).switchover, true);
  assert.equal(new LiveRounds(cfg).decide({ ...launched(2000), downtimeLimitMs: 20 }).switchover, false, 'set --downtime-limit 20ms: another round');
  const tight = new LiveRounds({ ...cfg, downtimeLimitMs: 20 });
  assert.equal(tight.decide({ ...launched(2000), downtimeLimitMs: 500 }).switchover, true, 'raised at run time: pause now');
});
