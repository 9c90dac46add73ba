import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NetEstimator } from '../../src/core/net-estimator.ts';

const cfg = { initialBandwidthBytesPerSec: 1e6, windowSamples: 4, minSampleMs: 5, capBytesPerSec: Infinity };

test('before any sample the configured initial bandwidth is reported', () => {
  assert.equal(new NetEstimator(cfg).bandwidthBytesPerSec, 1e6);
});

test('delivery rate is measured from the flight start, even when acks arrive in a clump', () => {
  const e = new NetEstimator(cfg);
  // Ten 1 MB batches sent at t=0..9; all acknowledged in one clump at t=100.
  const stamps = Array.from({ length: 10 }, (_, i) => e.onSent(1e6, i));
  assert.equal(e.bytesInFlight, 10e6);
  for (const s of stamps) e.onAcked(1e6, s, 100);
  // 10 MB over 100 ms since the flight began.
  assert.equal(e.bandwidthBytesPerSec, 100e6);
  assert.equal(e.bytesInFlight, 0);
});

test('an idle spell before a flight does not dilute the sample', () => {
  const e = new NetEstimator(cfg);
  e.onAcked(1e6, e.onSent(1e6, 0), 10); // 100 MB/s
  const s = e.onSent(2e6, 5000); // idle for ~5 s, then 2 MB
  e.onAcked(2e6, s, 5010);
  assert.equal(e.bandwidthBytesPerSec, 200e6);
});

test('the cap bounds the estimate; RTT is smoothed as TCP does', () => {
  const e = new NetEstimator({ ...cfg, capBytesPerSec: 50e6 });
  e.onAcked(1e6, e.onSent(1e6, 0), 10);
  assert.equal(e.bandwidthBytesPerSec, 50e6);
  e.onRttSample(8);
  e.onRttSample(16);
  assert.equal(e.rttMs, 9);
  assert.equal(e.minRttMs, 8);
});

test('samples shorter than minSampleMs are ignored', () => {
  const e = new NetEstimator(cfg);
  e.onAcked(1e6, e.onSent(1e6, 0), 1);
  assert.equal(e.bandwidthBytesPerSec, 1e6);
});
