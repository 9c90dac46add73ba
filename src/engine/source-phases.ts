/**
 * The phases of a source migration, one function each, in the order
 * SourceMigration.run calls them (as QEMU's migration.c reads:
 * migration_iteration_run, migration_completion, …). Each takes the run's
 * context and changes only its state object; none keeps state of its own.
 */
import { ErrorCodes, PeerReportedError, PresyncError, toPresyncError } from '../core/errors.ts';
import { PageSet } from '../core/pageset.ts';
import { guestPausedIn, type Phase } from '../core/phase.ts';
import type { EpochDecision, EpochObservation } from '../core/types.ts';
import { sleep } from '../transport/deadline.ts';
import { digestRunFrames, verifySummary } from '../wire/digest-runs.ts';
import type { PageSender } from './page-sender.ts';
import type { SourceLink } from './source-link.ts';
import type { MigrateOptions, MigrationResult, SourceEvent } from './source-options.ts';
import type { Sent, SourceState } from './source-state.ts';

/**
 * Known-stale pages at the pause from which the final scan overlaps their
 * sending: 256 pages (1 MiB) take ~8 ms at 1 Gbit/s, about what the worker
 * thread's scan loses to the blocking two-thread scan on 256 MiB.
 */
const OVERLAP_FINAL_SCAN_MIN_PAGES = 256;

/** What a phase works with: the options, the state, the link and the sender, and the migration's clock and events. */
export interface SourceRun {
  readonly o: MigrateOptions;
  readonly s: SourceState;
  readonly link: SourceLink;
  readonly sender: PageSender;
  readonly epochMs: number;
  readonly stepTimeoutMs: number;
  readonly scanMode: 'full' | 'incremental' | 'auto';
  readonly overlapScans: boolean;
  /** Milliseconds since the migration started. */
  now(): number;
  emit(e: SourceEvent): void;
  toPhase(p: Phase, reason?: string): void;
  /** The phase the migration is in. */
  phase(): Phase;
  /** When launch was asked for (ms since the start), or -1. */
  launchedAt(): number;
  stopRequested(): boolean;
  downtimeLimitMs(): number | undefined;
  /** Waits `ms`, or less if launch is asked for meanwhile. */
  untilLaunchOr(ms: number): Promise<void>;
  updateStatus(phase: Phase, rateBytesPerSec: number, dirtyPages?: number): void;
  /** Emits the current status as a progress event. */
  progress(): void;
}

/** The policy's observation: the state, the estimator's view of the link, the ledger's fields. */
export function observe(r: SourceRun, phase: 'presync' | 'launched', dirty: PageSet, stepMs: number): EpochObservation {
  const { s } = r;
  const { consumed, wireBytesPerPage, offeredBytes, deliveredBytes } = s.ledger.observe();
  const limit = r.downtimeLimitMs();
  return {
    epoch: s.epoch,
    timeMs: r.now(),
    epochMs: stepMs,
    phase,
    geometry: s.geometry,
    dirty,
    stale: s.stale,
    net: {
      bandwidthBytesPerSec: s.est.bandwidthBytesPerSec,
      rttMs: s.est.rttMs,
      rttSamples: s.est.rttSamples,
      bytesInFlight: s.est.bytesInFlight,
      offeredBytes,
      deliveredBytes,
    },
    guestSlowdown: 0,
    consumed,
    wireBytesPerPage,
    ...(phase === 'launched' ? { launchedAtMs: r.launchedAt(), pauseLagMs: r.o.controller.pauseLagMs ?? 0 } : {}),
    ...(limit !== undefined ? { downtimeLimitMs: limit } : {}),
  };
}

/** One row of the time series for a step that started at `t0`. */
export function record(r: SourceRun, phase: 'presync' | 'launched', t0: number, d: EpochDecision, sent: Sent, dirty: number, delivered: number): void {
  const { s } = r;
  const stepMs = Math.max(1e-3, r.now() - t0);
  s.acct.point({
    tMs: r.now(),
    phase,
    sentBytes: sent.bytes,
    sentPages: sent.pages,
    deliveredBytes: delivered,
    budgetBytes: Number.isFinite(d.budgetBytes) ? d.budgetBytes : -1,
    dirtyPages: dirty,
    stalePages: s.stale.count(),
    rttMs: s.est.rttMs,
    throughputBytesPerSec: (sent.bytes / stepMs) * 1000,
    ...(d.diag ? { diag: d.diag } : {}),
  });
}

// ---- connect

/** Connects, takes the first full scan and learns what the target lacks. */
export async function connectAndScan(r: SourceRun): Promise<void> {
  r.toPhase('presync');
  await r.link.connect(0);
  r.s.scanner.scan();
  r.s.refreshStale(null);
  r.s.startInitialCopy();
  r.updateStatus('presync', 0);
}

// ---- presync

/** Presync's loop state between epochs. */
export interface PresyncLoop {
  lastEpochStart: number;
  /** The next epoch's scan, hashing on a worker thread while this epoch's pages go out. */
  nextScan: Promise<PageSet> | undefined;
}

function presyncScan(r: SourceRun): Promise<PageSet> {
  const { s } = r;
  const incremental = r.scanMode === 'incremental' || (r.scanMode === 'auto' && s.everSentCount < s.pageCount);
  // Stale pages go out whatever they hold: the slice leaves them out (recent writes are still checked).
  return incremental ? s.scanner.scanIncremental({ sliceFraction: 1 / 8, skip: s.stale }) : s.scanner.scanAsync();
}

/** One presync epoch: scan, decide, send within the budget, ping; a broken link is reconnected. */
export async function presyncEpoch(r: SourceRun, loop: PresyncLoop): Promise<void> {
  const { s, o } = r;
  // Process acknowledgements that arrived while we scanned or sent, before observing.
  await new Promise<void>((res) => setImmediate(res));
  const t0 = r.now();
  const dirty = s.epoch === 0 ? new PageSet(s.pageCount) : await (loop.nextScan ?? presyncScan(r));
  loop.nextScan = undefined;
  if (s.epoch > 0) s.refreshStale(dirty);
  s.acct.onWrites(dirty);
  // The epoch really lasted as long as its scan and sends took, if longer than planned.
  const d = o.policy.decide(observe(r, 'presync', dirty, loop.lastEpochStart < 0 ? r.epochMs : Math.max(r.epochMs, t0 - loop.lastEpochStart)));
  loop.lastEpochStart = t0;
  if (r.overlapScans) {
    loop.nextScan = presyncScan(r);
    // Awaited next epoch; if the migration ends first, its failure must not go unhandled.
    loop.nextScan.catch(() => undefined);
  }
  const sent = await sendOrReconnect(r, d);
  record(r, 'presync', t0, d, sent, dirty.count(), 0);
  r.updateStatus('presync', (sent.bytes / Math.max(1, r.now() - t0)) * 1000, dirty.count());
  r.progress();
  s.epoch++;
  const left = t0 + r.epochMs - r.now();
  if (left > 0) await r.untilLaunchOr(left);
}

/** Sends an epoch's pages and a ping; a link failure (or a frame damaged in transit) means reconnect, anything else is final. */
async function sendOrReconnect(r: SourceRun, d: EpochDecision): Promise<Sent> {
  const { link } = r;
  let sent: Sent = { bytes: 0, pages: 0 };
  try {
    if (link.linkError) throw link.linkError;
    sent = await r.sender.send(d.send, d.budgetBytes);
    await link.control.send({ type: 'ping', nonce: BigInt(Math.round(r.now() * 1000)) });
  } catch (e) {
    if (link.aborting) throw link.aborting;
    const err = toPresyncError(e, ErrorCodes.CONNECTION);
    // Either end's CRC caught a damaged frame: nothing bad was applied, so a
    // fresh connection resumes from the target's digests.
    if (err.code !== ErrorCodes.CONNECTION && err.code !== ErrorCodes.TIMEOUT && err.code !== ErrorCodes.CHECKSUM) throw err;
    r.emit({ event: 'disconnected', error: { code: err.code, message: err.message } });
    link.destroyLanes();
    await link.reconnect();
  }
  return sent;
}

/** Presync epochs until launch. */
export async function runPresync(r: SourceRun): Promise<void> {
  const loop: PresyncLoop = { lastEpochStart: -1, nextScan: undefined };
  // A launch asked for while the controller is not ready (a disk mirror still copying) waits, presync going on.
  while (r.launchedAt() < 0 || (r.o.controller.launchBlocker?.() ?? null) !== null) {
    if (r.stopRequested()) throw new PresyncError(ErrorCodes.ABORTED, 'stopped before launch');
    if (!r.o.controller.isAlive()) throw new PresyncError(ErrorCodes.GUEST_GONE, `the guest (${r.o.controller.kind}) is gone: it exited during presync; nothing was handed over`);
    const failed = r.o.controller.failure?.() ?? null;
    if (failed) throw failed;
    await presyncEpoch(r, loop);
  }
  if (loop.nextScan) {
    // What the scan in flight saw is news: its pages are compared only once.
    const d = await loop.nextScan;
    r.s.refreshStale(d);
    r.s.acct.onWrites(d);
  }
}

// ---- launched: live rounds

/** The live rounds' loop state. */
export interface LiveRoundLoop {
  lastT: number;
  firstScan: boolean;
  probe: { readonly pages: Uint32Array; readonly at: number } | undefined;
}

/** Enters the launched phase: the link must be up again, the target told. */
export async function enterLaunched(r: SourceRun): Promise<LiveRoundLoop> {
  if (r.link.linkError) await r.link.reconnect();
  r.toPhase('launched');
  r.s.acct.onLaunch();
  await r.link.control.send({ type: 'phase', phase: 'launched' });
  return { lastT: r.now(), firstScan: true, probe: undefined };
}

/** What the round after this one looks at: the dirty pages, or null when a pause started early has taken effect. */
async function liveScan(r: SourceRun, loop: LiveRoundLoop): Promise<PageSet | null> {
  const { s } = r;
  if (loop.probe) {
    // A close look at a few hot pages: the rest of the guest is left to the final scan.
    const wait = loop.probe.at - r.now();
    if (wait > 0) await sleep(wait);
    // A pause started early has taken effect: the guest writes nothing
    // more, so there is nothing left to watch for; the rest is the final copy's.
    if (s.pausing && s.pausedAt >= 0) return null;
    const dirty = s.scanner.scanPages(loop.probe.pages);
    loop.probe = undefined;
    return dirty;
  }
  // The first scan after launch follows a presync scan by at most an
  // epoch: the pages written since are among the recent writes or in the
  // rotating slice, or else they are caught by the final scan, which is
  // full. A full scan here would add its whole cost to launch→running.
  const quick = loop.firstScan && r.scanMode !== 'full';
  return quick ? s.scanner.scanIncremental({ sliceFraction: 1 / 8, skip: s.stale }) : s.scanner.scanAsync();
}

/** Starts the pause the policy asked for ahead of the switchover; the probes go on while the guest stops. */
function startPauseEarly(r: SourceRun): void {
  const { s } = r;
  s.pausing = r.o.controller.pause().then(() => {
    s.pausedAt = r.now();
    r.emit({ event: 'paused', atMs: s.pausedAt });
  });
  s.pausing.catch(() => undefined);
}

/** One live round: scan (or probe), decide, send. Returns false once the policy asks for the switchover. */
export async function liveRound(r: SourceRun, loop: LiveRoundLoop): Promise<boolean> {
  const { s, o } = r;
  const dirty = await liveScan(r, loop);
  if (!dirty) return false;
  const t0 = r.now();
  s.refreshStale(dirty);
  if (loop.firstScan) {
    // Pages the target lacks at the moment of launch (in-flight pages are on their way).
    s.residualPagesAtLaunch = s.stale.count();
    loop.firstScan = false;
  }
  const d = o.policy.decide(observe(r, 'launched', dirty, Math.max(1, t0 - loop.lastT)));
  loop.lastT = t0;
  if (d.diag && typeof d.diag.round === 'number') s.liveRounds = Math.max(s.liveRounds, d.diag.round);
  if (d.switchover) {
    s.converged = d.converged ?? true;
    if (d.abort) throw new PresyncError(ErrorCodes.NO_CONVERGENCE, `policy ${o.policy.name} could not converge under its downtime limit`);
    if (d.send.length > 0) s.aheadOfPause = { d, t0, dirtyPages: dirty.count() };
    return false;
  }
  if (d.startPause && d.probe && !s.pausing) startPauseEarly(r);
  const sent = await r.sender.send(d.send, d.budgetBytes);
  if (d.probe) loop.probe = { pages: d.probe.pages, at: t0 + d.probe.afterMs };
  else await r.link.drain();
  record(r, 'launched', t0, d, sent, dirty.count(), sent.bytes);
  s.epoch++;
  return true;
}

/** Live rounds until the policy says the pause will be short. */
export async function runLiveRounds(r: SourceRun): Promise<void> {
  const loop = await enterLaunched(r);
  while (await liveRound(r, loop));
}

// ---- pause

/**
 * Sends the pages the policy wants across just ahead of the pause, while the
 * guest still runs, and pauses once what is left of them on the wire takes no
 * longer than the guest takes to stop (QEMU runs on while it sets up its
 * stream): with a short enough send, at once, alongside it.
 */
export async function pauseGuest(r: SourceRun): Promise<void> {
  const { s, o, link } = r;
  const ahead = s.aheadOfPause;
  if (ahead) {
    ahead.sending = r.sender.send(ahead.d.send, Infinity);
    // Settled here so that a failure while the pause is under way is not unhandled; it is rethrown in the final copy.
    ahead.sending.catch(() => undefined);
  }
  // Probes do not wait for their sends: those still crossing count too.
  const lead = Math.max(0, o.controller.pauseLagMs ?? 0);
  // Sized as the policy sized it, from the observed bytes per page.
  const aheadBytes = (ahead?.d.send.length ?? 0) * s.ledger.wireBytesPerPage;
  const crossingMs = (bytes: number): number => (bytes / Math.max(1, s.est.bandwidthBytesPerSec)) * 1000;
  if (!s.pausing && crossingMs(aheadBytes + s.est.bytesInFlight) > lead) {
    if (ahead?.sending) await ahead.sending;
    const t1 = r.now();
    while (link.inflightCount > 0 && crossingMs(s.est.bytesInFlight) > lead) {
      if (link.linkError) throw link.linkError;
      if (r.now() - t1 > r.stepTimeoutMs) throw new PresyncError(ErrorCodes.TIMEOUT, `pages sent ahead of the pause were not acknowledged within ${r.stepTimeoutMs} ms`);
      await sleep(1);
    }
  }
  // ---- switchover: the guest is paused from here until handover or rollback.
  r.toPhase('final-copy');
  await link.control.send({ type: 'phase', phase: 'final-copy' });
  if (s.pausing) await s.pausing;
  else {
    await o.controller.pause();
    s.pausedAt = r.now();
    r.emit({ event: 'paused', atMs: s.pausedAt });
  }
  s.paused = true;
}

// ---- final copy

/**
 * Sends what is left with the guest paused. The final scan is always full.
 * It runs on worker threads while the pages already known stale go out: the
 * guest is paused, so what they hold now is final and the scan will find them
 * in sync; the scan's cost hides behind the link instead of adding to the
 * pause. With little to send nothing hides the scan: the blocking scan on two
 * threads is then the shorter one.
 */
export async function finalCopy(r: SourceRun): Promise<void> {
  const { s } = r;
  const ahead = s.aheadOfPause;
  const aheadSent = async (): Promise<void> => {
    if (!ahead?.sending) return;
    const sent = await ahead.sending;
    record(r, 'launched', ahead.t0, ahead.d, sent, ahead.dirtyPages, sent.bytes);
  };
  if (s.stale.count() + (ahead?.d.send.length ?? 0) >= OVERLAP_FINAL_SCAN_MIN_PAGES) {
    // Two lanes (one per scan thread): with pages sent ahead of the pause the
    // residual shrank and the scan, not the link, was the longer of the two
    // on one lane (final scan 28-45 ms against sends handed over by 12 ms).
    const finalScan = s.scanner.scanAsync();
    await aheadSent();
    await r.sender.send(s.stale.toArray(), Infinity);
    await finalScan;
  } else {
    await aheadSent();
    s.scanner.scan();
  }
  s.refreshStale(null);
  await r.sender.send(s.stale.toArray(), Infinity);
  await r.link.drain();
}

// ---- verify

/**
 * Asks the target whether its image equals ours bit for bit: the 32-byte
 * summary first if it answers those, else (or if they differ) the digest
 * table; pages it holds differently are sent again, once.
 */
export async function verify(r: SourceRun): Promise<void> {
  const { s, link } = r;
  r.toPhase('verify');
  await link.control.send({ type: 'phase', phase: 'verify' });
  let verified = false;
  if (link.summaryVerify) {
    const v = await link.ask([verifySummary(s.scanner.digests)], 'answer the verify summary');
    if (v.type !== 'verify-summary-response') throw new PresyncError(ErrorCodes.PROTOCOL, `VERIFY_SUMMARY answered with ${v.type}`);
    verified = v.match;
  }
  for (let attempt = 0; attempt < 2 && !verified; attempt++) {
    const v = await link.ask([...digestRunFrames('verify-request', s.scanner.digests)], 'answer the verify request');
    if (v.type !== 'verify-response') throw new PresyncError(ErrorCodes.PROTOCOL, `VERIFY_REQUEST answered with ${v.type}`);
    verified = v.match;
    if (!verified) {
      if (v.mismatches.length < v.mismatchCount) break;
      // The target's copy of these pages differs from ours: send them again once.
      for (const p of v.mismatches) s.stale.add(p);
      await r.sender.send(v.mismatches, Infinity);
      await link.drain();
    }
  }
  if (!verified) throw new PresyncError(ErrorCodes.VERIFY, 'the target image still differs from the source after the final copy');
}

// ---- device state and commit

/**
 * Moves the device state and commits on the source. Still in verify: a
 * failed commit (e.g. QEMU's device-state stream failing because the target
 * QEMU died) must be able to roll back, and there is no rollback from handover.
 */
export async function commitDeviceState(r: SourceRun): Promise<void> {
  const { o, link } = r;
  const deviceState = o.deviceState ?? o.controller.deviceState;
  if (deviceState) {
    const state = await deviceState();
    const chunk = 1 << 20;
    for (let off = 0; off === 0 || off < state.length; off += chunk) {
      await link.control.send({ type: 'device-state', totalLength: state.length, offset: off, data: state.subarray(off, off + chunk) });
      if (state.length === 0) break;
    }
  }
  await o.controller.commit();
}

// ---- handover

/** HANDOVER and its confirmation; then the source copy is released. Returns when the guest resumed on the target. */
export async function handover(r: SourceRun): Promise<number> {
  const { s, o, link } = r;
  // Announced while still in verify: a connection that breaks here, before
  // HANDOVER left, must roll back, and handover → rollback is illegal.
  await link.control.send({ type: 'phase', phase: 'handover' });
  const done = link.handoverDone();
  s.handoverSent = true;
  r.toPhase('handover');
  await link.control.send({ type: 'handover' });
  await done;
  const resumedAt = r.now();
  r.toPhase('done');
  // Only now is the source copy released: the guest runs on the target.
  await o.controller.release().catch(() => undefined);
  await link.close();
  r.updateStatus('done', 0);
  return resumedAt;
}

// ---- the result, rollback, doubt

/** The migration's result from its state. */
export function result(r: SourceRun, outcome: 'done' | 'rolled-back', err: PresyncError | null, verified: boolean, resumedAt: number): MigrationResult {
  const { s } = r;
  return {
    outcome,
    error: err ? { code: err.code, message: err.message } : null,
    launchToRunningMs: outcome === 'done' ? resumedAt - r.launchedAt() : null,
    downtimeMs: outcome === 'done' ? resumedAt - s.pausedAt : null,
    presyncBytes: s.acct.presyncBytes,
    finalBytes: s.acct.finalBytes,
    residualPagesAtLaunch: s.residualPagesAtLaunch,
    wastedPages: s.acct.wastedPages,
    resentPages: s.acct.resentPages,
    guestSlowdown: 0,
    verified,
    converged: s.converged,
    liveRounds: s.liveRounds,
    series: s.acct.series,
  };
}

/**
 * After a failure: the guest resumed on the source and the target told, or,
 * once HANDOVER went out unconfirmed, in doubt with the guest left paused
 * (resuming could run it twice). The target answering HANDOVER with ERROR has
 * started nothing (its hook failed, or it failed before running it): that is
 * a rollback, not a doubt.
 */
export async function rollback(r: SourceRun, err: PresyncError): Promise<MigrationResult> {
  const { s, o, link } = r;
  const phase = r.phase();
  if (s.handoverSent && !(err instanceof PeerReportedError)) {
    link.destroyLanes();
    const doubt = new PresyncError(
      ErrorCodes.HANDOVER_IN_DOUBT,
      `handover sent but not confirmed (${err.code}: ${err.message}); the guest stays paused on the source and its image is intact: check the target, then resume the source only if the guest does not run there`,
    );
    r.updateStatus(phase, 0);
    return { ...result(r, 'rolled-back', doubt, false, 0), outcome: 'in-doubt' };
  }
  if (phase !== 'rollback' && phase !== 'done') r.toPhase('rollback', err.message);
  if (s.paused || s.pausing || guestPausedIn(phase)) {
    // A pause still taking effect is let finish first: resuming midway could leave QEMU migrating.
    await s.pausing?.catch(() => undefined);
    await o.controller.resume().catch(() => undefined);
  }
  await link.abort(err);
  r.updateStatus('rollback', 0);
  return result(r, 'rolled-back', err, false, 0);
}
