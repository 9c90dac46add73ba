import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_FRESH_FIRST, FreshFirst, spreadOrder } from '../../src/core/fresh-first.ts';
import { PageSet } from '../../src/core/pageset.ts';
import { createPresync } from '../../src/core/policies/presync.ts';
import { createPolicy } from '../../src/core/policies/registry.ts';
import type { EpochDecision, EpochObservation } from '../../src/core/types.ts';
import { simulate } from '../../src/sim/simulator.ts';
import { createWorkload } from '../../src/sim/workloads/index.ts';

const GBIT = 1e9 / 8;
const PAGES = 8192;
const WIRE = 4112;

/** Two 900-page "display buffers", as the movie guest has them. */
const bufA = new PageSet(PAGES).addRange(100, 999);
const bufB = new PageSet(PAGES).addRange(1000, 1899);
const hot = bufA.union(bufB);

function obs(timeMs: number, dirty: PageSet, stale: PageSet, over: Partial<EpochObservation> = {}): EpochObservation {
  return {
    epoch: 0,
    timeMs,
    epochMs: 2,
    phase: 'launched',
    geometry: { pageSize: 4096, pageCount: PAGES },
    dirty,
    stale,
    net: { bandwidthBytesPerSec: GBIT, rttMs: 1, bytesInFlight: 0, offeredBytes: 0, deliveredBytes: 0 },
    guestSlowdown: 0,
    consumed: 0,
    wireBytesPerPage: WIRE,
    ...over,
  };
}

const none = () => new PageSet(PAGES);

/** Drives a FreshFirst with `writesAt(t)` (the hot pages written in the look ending at t) until it switches over. */
function drive(ff: FreshFirst, writesAt: (t: number) => PageSet, startMs = 0): { decisions: EpochDecision[]; end: EpochDecision; endMs: number } {
  const stale = PageSet.copyOf(hot);
  const decisions: EpochDecision[] = [];
  let d = ff.start(obs(startMs, none(), stale));
  let t = startMs;
  for (let i = 0; i < 1000 && !d.switchover; i++) {
    decisions.push(d);
    assert.ok(d.probe, 'every decision short of the switchover looks again');
    // What the shell sent is no longer stale, unless written again.
    for (const p of d.send) stale.delete(p);
    t += d.probe.afterMs;
    const w = writesAt(t);
    stale.unionWith(w);
    d = ff.decide(obs(t, w, stale));
  }
  return { decisions, end: d, endMs: t };
}

test('fresh-first: a burst of writes, then quiet: the pages just written are sent ahead of the pause', () => {
  const ff = new FreshFirst(hot, 0);
  // Buffer B is redrawn in two looks at 20-22 ms, then nothing is written.
  const { decisions, end, endMs } = drive(ff, (t) => (t === 20 ? new PageSet(PAGES).addRange(1000, 1449) : t === 22 ? new PageSet(PAGES).addRange(1450, 1899) : none()));
  assert.equal(end.switchover, true);
  assert.equal(end.converged, true);
  assert.equal(endMs, 26, 'two quiet looks end the burst');
  assert.equal(end.diag?.freshState, 2);
  assert.equal(end.diag?.freshPages, 900);
  // While watching, the link carried hot pages from both buffers, a few looks' worth at a time.
  const watching = decisions.filter((d) => d.diag?.freshState === 0);
  const meanwhile = watching.flatMap((d) => [...d.send]);
  assert.ok(meanwhile.length > 0);
  assert.ok(meanwhile.some((p) => bufA.has(p)) && meanwhile.some((p) => bufB.has(p)), 'spread over the whole hot set');
  const perLook = Math.floor((GBIT * DEFAULT_FRESH_FIRST.meanwhileLooks * DEFAULT_FRESH_FIRST.probeMs) / 1000 / WIRE);
  for (const d of watching) assert.ok(d.send.length <= perLook, `${d.send.length} pages in one look, at most ${perLook}`);
  // From the burst on, only its own pages go, as soon as they are seen written, and all of them by the pause.
  const fromBurst = [...decisions.filter((d) => d.diag?.freshState === 1), end].flatMap((d) => [...d.send]);
  for (const p of fromBurst) assert.ok(bufB.has(p), `page ${p} sent during the burst is not one it wrote`);
  assert.deepEqual([...new Set(fromBurst)].sort((x, y) => x - y), [...bufB.toArray()], 'the whole redrawn buffer goes ahead of the pause');
});

test('fresh-first: no burst before maxWaitMs, or a writer that never stops: the guest pauses with nothing sent ahead', () => {
  const idle = drive(new FreshFirst(hot, 1000), () => none(), 1000);
  assert.equal(idle.end.switchover, true);
  assert.equal(idle.end.send.length, 0);
  assert.equal(idle.end.diag?.freshState, 4);
  assert.ok(idle.endMs - 1000 >= DEFAULT_FRESH_FIRST.maxWaitMs);
  // A writer sweeping the hot set 60 pages per look never goes quiet.
  let next = 100;
  const sweeping = drive(new FreshFirst(hot, 0), () => {
    const w = new PageSet(PAGES).addRange(next, next + 59);
    next = next + 60 >= 1900 ? 100 : next + 60;
    return w;
  });
  assert.equal(sweeping.end.send.length, 0);
  assert.equal(sweeping.end.diag?.freshState, 4);
});

test('fresh-first: a stray write too small to be worth sending ahead keeps the watch going', () => {
  // 100 pages at 10 ms (a burst by share, but 3 ms on the wire), then buffer A at 30 ms.
  const { decisions, end } = drive(new FreshFirst(hot, 0), (t) => (t === 10 ? new PageSet(PAGES).addRange(1500, 1599) : t === 30 ? PageSet.copyOf(bufA) : none()));
  assert.equal(end.diag?.freshState, 2);
  assert.ok(decisions.some((d) => d.diag?.freshState === 0 && (d.diag?.waitedMs ?? 0) > 14), 'the watch went on after the stray write');
  const sent = new Set([...decisions, end].flatMap((d) => [...d.send]));
  for (const p of bufA) assert.ok(sent.has(p), `page ${p} of the burst was sent`);
});

test('fresh-first: when the bet is off, what the pause lag lets cross still goes ahead of the pause', () => {
  const ff = new FreshFirst(hot, 0, { ...DEFAULT_FRESH_FIRST, maxWaitMs: 0 });
  const d = ff.start(obs(0, none(), PageSet.copyOf(hot), { pauseLagMs: 15 }));
  assert.equal(d.switchover, true);
  assert.equal(d.send.length, Math.floor((GBIT * 15 * 0.9) / 1000 / WIRE));
  assert.ok([...d.send].some((p) => bufA.has(p)) && [...d.send].some((p) => bufB.has(p)), 'spread over the whole hot set');
  // Without a lag, nothing goes ahead.
  assert.equal(new FreshFirst(hot, 0, { ...DEFAULT_FRESH_FIRST, maxWaitMs: 0 }).start(obs(0, none(), PageSet.copyOf(hot))).send.length, 0);
});

test('fresh-first: decisions are a pure function of the observations', () => {
  const writes = (t: number) => (t === 14 ? PageSet.copyOf(bufA) : none());
  const a = drive(new FreshFirst(hot, 0), writes);
  const b = drive(new FreshFirst(hot, 0), writes);
  assert.deepEqual(a.decisions.map((d) => [...d.send]), b.decisions.map((d) => [...d.send]));
  assert.deepEqual([...a.end.send], [...b.end.send]);
});

test('fresh-first: not worth watching a hot set that takes less than minGainMs to send', () => {
  assert.equal(FreshFirst.worthWatching(100, WIRE, GBIT), false);
  assert.equal(FreshFirst.worthWatching(1800, WIRE, GBIT), true);
  assert.equal(FreshFirst.worthWatching(1800, WIRE, 0), false);
});

test('spreadOrder is a permutation whose prefixes sample the whole list', () => {
  const list = hot.toArray();
  const s = spreadOrder(list);
  assert.deepEqual([...s].sort((x, y) => x - y), [...list]);
  const tenth = s.subarray(0, list.length / 10);
  const inA = [...tenth].filter((p) => bufA.has(p)).length;
  assert.ok(inA > tenth.length * 0.4 && inA < tenth.length * 0.6, `${inA} of the first ${tenth.length} in the first half`);
});

test('simulated movie: presync with fresh-first pauses for less than without it, and the image still verifies', () => {
  const geometry = { pageSize: 4096, pageCount: 65536 };
  const workload = createWorkload('movie', { geometry, seed: 1 });
  const run = (freshFirst: boolean) =>
    simulate({
      workload,
      policy: freshFirst ? createPolicy('presync-fresh', { geometry, seed: 1 }) : createPresync({ geometry, seed: 1 }),
      link: { bandwidthBytesPerSec: GBIT, rttMs: 1 },
      launchAtMs: 10_000,
      keepSeries: true,
    });
  const on = run(true);
  const off = run(false);
  for (const r of [on, off]) {
    assert.equal(r.outcome, 'done');
    assert.equal(r.verified, true);
  }
  assert.ok(on.downtimeMs !== null && off.downtimeMs !== null);
  assert.ok(on.downtimeMs < off.downtimeMs * 0.85, `pause ${on.downtimeMs} ms with fresh-first, ${off.downtimeMs} ms without`);
  const burstSent = on.series.filter((p) => p.phase === 'launched' && (p.diag?.freshState === 1 || p.diag?.freshState === 2)).reduce((n, p) => n + p.sentPages, 0);
  assert.ok(burstSent >= 900, `${burstSent} pages of the burst went ahead of the pause`);
});

test('fresh-first: a burst too big to cross before it is rewritten calls the bet off at once, without sending it', () => {
  // The whole 1800-page hot set at once: ~59 ms at 1 Gbit/s, against a 40 ms send limit.
  const ff = new FreshFirst(hot, 0, { ...DEFAULT_FRESH_FIRST, maxSendMs: 40 });
  const { decisions, end, endMs } = drive(ff, (t) => (t === 10 ? PageSet.copyOf(hot) : none()));
  assert.equal(endMs, 10);
  assert.equal(end.switchover, true);
  assert.equal(end.diag?.freshState, 4);
  assert.equal(decisions.filter((d) => d.diag?.freshState === 1).length, 0);
});

test('fresh-first: background writes below quietShare do not keep a burst open, and one slow look can establish the quiet', () => {
  // 30 pages per look elsewhere in the hot set (1.7 %), buffer B redrawn at 20 ms.
  const { end, endMs } = drive(new FreshFirst(hot, 0), (t) => {
    const w = new PageSet(PAGES).addRange(1000 + ((t * 15) % 870), 1000 + ((t * 15) % 870) + 29);
    if (t === 20) w.unionWith(bufB);
    return w;
  });
  assert.equal(end.diag?.freshState, 2);
  assert.equal(endMs, 24);
  const slow = new FreshFirst(hot, 0);
  const stale = PageSet.copyOf(hot);
  slow.start(obs(0, none(), stale));
  slow.decide(obs(2, none(), stale));
  const busy = slow.decide(obs(4, PageSet.copyOf(bufA), stale));
  assert.equal(busy.switchover, false);
  // The next look comes 9 ms later (the shell was busy sending): the writer had time to go on and did not.
  const d = slow.decide(obs(13, none(), stale));
  assert.equal(d.switchover, true);
  assert.equal(d.diag?.freshState, 2);
});

test('fresh-first: a shell whose pause takes effect late is asked to start it at the burst\'s first sight, and only then', () => {
  const stale = PageSet.copyOf(hot);
  const lagged = (t: number, dirty: PageSet) => obs(t, dirty, stale, { pauseLagMs: 15 });
  const ff = new FreshFirst(hot, 0);
  ff.start(lagged(0, none()));
  assert.equal(ff.decide(lagged(2, none())).startPause, undefined);
  const burst = ff.decide(lagged(4, PageSet.copyOf(bufA)));
  assert.equal(burst.startPause, true);
  assert.equal(burst.switchover, false);
  assert.equal(burst.send.length, 900, 'the burst goes at once');
  // Without a lag the burst is sent the same way, but the pause waits for the switchover.
  const plain = new FreshFirst(hot, 0);
  plain.start(obs(0, none(), stale));
  assert.equal(plain.decide(obs(2, PageSet.copyOf(bufA), stale)).startPause, undefined);
});

test('simulated movie with a 15 ms pause lag: presync fills the lag with hot pages, presync-fresh watches; both verify', () => {
  const geometry = { pageSize: 4096, pageCount: 65536 };
  const workload = createWorkload('movie', { geometry, seed: 1 });
  const run = (policy: string, pauseLagMs: number) =>
    simulate({ workload, policy: createPolicy(policy, { geometry, seed: 1 }), link: { bandwidthBytesPerSec: GBIT, rttMs: 1 }, launchAtMs: 10_000, pauseLagMs });
  const filled = run('presync', 15);
  const unfilled = run('presync', 0);
  const fresh = run('presync-fresh', 15);
  for (const r of [filled, unfilled, fresh]) {
    assert.equal(r.outcome, 'done');
    assert.equal(r.verified, true);
  }
  const ahead = filled.series.filter((p) => p.phase === 'launched' && p.diag?.freshState === 4).reduce((n, p) => n + p.sentPages, 0);
  assert.ok(ahead > 0 && ahead <= Math.ceil((GBIT * 0.015) / 4096), `${ahead} pages filled the lag`);
  assert.equal(unfilled.series.filter((p) => p.phase === 'launched' && p.sentPages > 0).length, 0, 'no lag, nothing sent ahead');
  assert.ok(fresh.series.some((p) => p.phase === 'launched' && p.diag?.freshState === 1), 'presync-fresh watched and saw a burst');
  assert.ok(fresh.downtimeMs! < filled.downtimeMs!, `pause ${fresh.downtimeMs} (fresh) vs ${filled.downtimeMs} (lag filled)`);
});
