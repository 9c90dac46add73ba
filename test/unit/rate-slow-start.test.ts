import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_SLOW_START, SlowStartController, type RateSignal } from '../../src/core/rate/slow-start.ts';

const W0 = 1000;
const cfg = { initialWindowBytes: W0, additiveIncreaseBytes: 100, queueToleranceBytes: 0, rttSlackMs: 0, cutHoldEpochs: 1 };

/** A healthy epoch in which the whole window was used. */
function ok(offered: number, over: Partial<RateSignal> = {}): RateSignal {
  return { offeredBytes: offered, deliveredBytes: offered, bytesInFlight: 0, rttMs: 1, guestSlowdown: 0, sendable: true, ...over };
}

test('slow start: the window doubles each used epoch', () => {
  const c = new SlowStartController(cfg);
  let d = c.update(ok(0));
  assert.equal(d.windowBytes, W0);
  assert.equal(d.state, 'slow-start');
  const seen = [d.windowBytes];
  for (let i = 0; i < 4; i++) {
    d = c.update(ok(d.windowBytes));
    seen.push(d.windowBytes);
  }
  assert.deepEqual(seen, [1000, 2000, 4000, 8000, 16000]);
  assert.equal(d.state, 'slow-start');
});

test('slow start: an epoch that used under half the window does not grow it (application-limited)', () => {
  const c = new SlowStartController(cfg);
  c.update(ok(0));
  assert.equal(c.update(ok(400)).windowBytes, 1000);
  assert.equal(c.update(ok(600)).windowBytes, 2000);
});

test('threshold: at ssthresh the growth switches from doubling to additive', () => {
  const c = new SlowStartController({ ...cfg, initialSsthreshBytes: 3000 });
  let d = c.update(ok(0));
  d = c.update(ok(d.windowBytes)); // 2000
  d = c.update(ok(d.windowBytes)); // min(4000, 3000)
  assert.equal(d.windowBytes, 3000);
  assert.equal(d.state, 'avoidance');
  d = c.update(ok(d.windowBytes));
  assert.equal(d.windowBytes, 3100);
  d = c.update(ok(d.windowBytes));
  assert.equal(d.windowBytes, 3200);
});

test('cut on the link signal: delivered below offered with a queue building', () => {
  const c = new SlowStartController(cfg);
  let d = c.update(ok(0));
  for (let i = 0; i < 3; i++) d = c.update(ok(d.windowBytes)); // 8000
  d = c.update(ok(8000, { deliveredBytes: 5000, bytesInFlight: 3000 }));
  assert.equal(d.cut, 'link');
  assert.equal(d.windowBytes, 4000);
  assert.equal(c.ssthreshBytes, 4000);
  assert.equal(d.state, 'avoidance');
  // The epoch after a cut neither cuts nor grows; afterwards growth is additive.
  d = c.update(ok(4000));
  assert.equal(d.windowBytes, 4000);
  d = c.update(ok(4000));
  assert.equal(d.windowBytes, 4100);
});

test('cut on the RTT signal: RTT above the baseline by the factor', () => {
  const c = new SlowStartController(cfg);
  let d = c.update(ok(0, { rttMs: 2 }));
  d = c.update(ok(d.windowBytes, { rttMs: 2 })); // 2000, baseline 2
  d = c.update(ok(d.windowBytes, { rttMs: 2.9 })); // below 1.5×2 = 3: grows
  assert.equal(d.windowBytes, 4000);
  d = c.update(ok(d.windowBytes, { rttMs: 3.5 }));
  assert.equal(d.cut, 'rtt');
  assert.equal(d.windowBytes, 2000);
  assert.ok(c.baselineRttMs < 2.1, 'the baseline follows increases slowly');
});

test('cut on the guest signal: slowdown above the tracking floor by more than the budget', () => {
  const c = new SlowStartController(cfg);
  let d = c.update(ok(0, { guestSlowdown: 0.02 })); // floor: tracking alone costs 2 %
  d = c.update(ok(d.windowBytes, { guestSlowdown: 0.06 })); // 4 % above the floor: grows to 2000
  assert.equal(d.cut, null);
  assert.equal(d.windowBytes, 2000);
  d = c.update(ok(2000, { guestSlowdown: 0.02 + DEFAULT_SLOW_START.slowdownBudget + 0.01 }));
  assert.equal(d.cut, 'guest');
  assert.equal(d.windowBytes, 1000);
  assert.deepEqual({ ...c.cutCounts }, { link: 0, rtt: 0, guest: 1 });
});

test('guest signal: a slowdown that stays high whatever we send (tracking) does not starve the sync', () => {
  const c = new SlowStartController({ ...cfg, slowdownFloorEpochs: 5 });
  let d = c.update(ok(0, { guestSlowdown: 0.09 }));
  for (let i = 0; i < 6; i++) d = c.update(ok(d.windowBytes, { guestSlowdown: 0.09 }));
  assert.equal(c.cutCounts.guest, 0);
  assert.equal(d.windowBytes, 1000 * 2 ** 6);
});

test('cuts never go below the floor and are held while the queue drains', () => {
  const c = new SlowStartController({ ...cfg, cutHoldEpochs: 2 });
  c.update(ok(0));
  const bad = ok(1000, { deliveredBytes: 100, bytesInFlight: 900 });
  assert.equal(c.update(bad).cut, 'link');
  assert.equal(c.windowBytes, W0);
  assert.equal(c.update(bad).cut, null, 'held');
  assert.equal(c.update(bad).cut, null, 'held');
  assert.equal(c.update(bad).cut, 'link');
  assert.equal(c.windowBytes, W0);
});

test('idle: with nothing to send the window returns to the initial value and nothing is granted', () => {
  const c = new SlowStartController({ ...cfg, idleAfterEpochs: 2 });
  let d = c.update(ok(0));
  for (let i = 0; i < 4; i++) d = c.update(ok(d.windowBytes));
  assert.equal(d.windowBytes, 16000);
  d = c.update(ok(16000, { sendable: false }));
  assert.equal(d.state, 'slow-start', 'one quiet epoch is not idle yet');
  d = c.update(ok(0, { sendable: false }));
  assert.equal(d.state, 'idle');
  assert.equal(d.windowBytes, 0);
  d = c.update(ok(0));
  assert.equal(d.state, 'slow-start');
  assert.equal(d.windowBytes, W0);
});

test('bad configuration is refused with a stable code', () => {
  assert.throws(() => new SlowStartController({ cutFactor: 1 }), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  assert.throws(() => new SlowStartController({ initialWindowBytes: 0 }), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
});
