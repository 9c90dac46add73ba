import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { blackoutReport, gapAcross, gapsOver, longestGap, STALE_TAIL_MS } from '../../src/lab/blackout-client.ts';

describe('blackout client: gap computation', () => {
  it('finds the longest gap between answers and when it happened', () => {
    assert.deepEqual(longestGap([1000, 1005, 1010, 1150, 1155, 1160]), { gapMs: 140, startMs: 1010, endMs: 1150 });
  });
  it('the first of equal gaps wins; fewer than two instants give none', () => {
    assert.deepEqual(longestGap([0, 5, 10]), { gapMs: 5, startMs: 0, endMs: 5 });
    assert.equal(longestGap([7]), null);
    assert.equal(longestGap([]), null);
  });
  it('counts the tail up to the end of the observation', () => {
    assert.deepEqual(longestGap([0, 5, 10], 500), { gapMs: 490, startMs: 10, endMs: 500 });
    assert.deepEqual(longestGap([], 500), null);
  });
  it('refuses times that go back', () => {
    assert.throws(() => longestGap([0, 10, 5]), /ascend/);
  });
});

describe('blackout client: report', () => {
  const base = { sent: 10, connectedAtMs: 0, intervalMs: 5 };
  it('a connection that answered through a pause survived, and its gap is the pause', () => {
    const r = blackoutReport({ ...base, times: [0, 5, 10, 180, 185], error: null, stoppedAtMs: 188 });
    assert.equal(r.connectionSurvived, true);
    assert.equal(r.longestGapMs, 170);
    assert.equal(r.longestGapStartMs, 10);
    assert.equal(r.answered, 5);
    assert.equal(r.error, null);
  });
  it('a reset connection did not survive, whatever it answered', () => {
    const r = blackoutReport({ ...base, times: [0, 5, 10, 15], error: 'connection error: ECONNRESET', stoppedAtMs: 20 });
    assert.equal(r.connectionSurvived, false);
    assert.match(r.error!, /ECONNRESET/);
  });
  it('a connection that went silent did not survive, and its gap runs to the stop', () => {
    const stop = 10 + STALE_TAIL_MS + 1;
    const r = blackoutReport({ ...base, times: [0, 5, 10], error: null, stoppedAtMs: stop });
    assert.equal(r.connectionSurvived, false);
    assert.equal(r.longestGapMs, stop - 10);
    assert.match(r.error!, /no answer in the last/);
  });
  it('no answers at all: nothing survived', () => {
    const r = blackoutReport({ ...base, times: [], error: null, stoppedAtMs: 100 });
    assert.equal(r.connectionSurvived, false);
    assert.equal(r.longestGapMs, null);
  });
});

describe('blackout client: the gap across the pause', () => {
  // A stall at 100-400 (not the migration), the pause at 1000-1100, answers back at 1230.
  const times = [0, 5, 100, 400, 405, 1000, 1230, 1235];
  it('lists the gaps over a floor, longest first, tail included', () => {
    assert.deepEqual(gapsOver(times, 50).map((g) => g.gapMs), [595, 300, 230, 95]);
    assert.deepEqual(gapsOver(times, 50, 2000).map((g) => g.gapMs), [765, 595, 300, 230, 95]);
    assert.equal(gapsOver(times, 50, undefined, 2).length, 2);
  });
  it('picks the longest gap overlapping the pause, not the longest overall', () => {
    const gaps = gapsOver(times, 50);
    assert.deepEqual(gapAcross(gaps, 1010, 1100), { gapMs: 230, startMs: 1000, endMs: 1230 });
    // A pause that starts inside one gap and ends in the next: the longer one.
    assert.deepEqual(gapAcross(gaps, 350, 1050), { gapMs: 595, startMs: 405, endMs: 1000 });
    assert.equal(gapAcross(gaps, 1300, 1400), null);
  });
  it('a report lists its gaps', () => {
    const r = blackoutReport({ sent: 8, times, error: null, connectedAtMs: 0, stoppedAtMs: 1240, intervalMs: 5 });
    assert.deepEqual(r.gaps.map((g) => g.gapMs), [595, 300, 230, 95]); // 5 ms between answers is not a gap
  });
});
