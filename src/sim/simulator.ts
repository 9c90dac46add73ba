import { Accounting, type MigrationMetrics, type SeriesPoint } from '../core/accounting.ts';
import { DEFAULT_WIRE_COST, type WireCostModel } from '../core/cost.ts';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { ShellLedger } from '../core/ledger.ts';
import { PageSet } from '../core/pageset.ts';
import { PhaseMachine } from '../core/phase.ts';
import type { EpochDecision, EpochObservation, MigrationPolicy } from '../core/types.ts';
import { SimLink, type LinkConfig } from './network.ts';
import { SimGuest } from './sim-guest.ts';
import type { Workload } from './workload.ts';

/**
 * Modelled cost our activity imposes on the guest. Dirty tracking costs a
 * write-protection fault per page per tracking interval (KVM's dirty log:
 * roughly 1–2 µs each); sending costs host CPU for copy, hash and syscall on a
 * core the guest shares (about 1 µs per 4 KiB page).
 */
export interface GuestCostModel {
  readonly trackUsPerDirtyPage: number;
  readonly sendUsPerPage: number;
  readonly guestCpus: number;
}

export const DEFAULT_GUEST_COST: GuestCostModel = { trackUsPerDirtyPage: 1.5, sendUsPerPage: 1.0, guestCpus: 1 };

export interface SimConfig {
  readonly workload: Workload;
  readonly policy: MigrationPolicy;
  readonly link: LinkConfig;
  /** Epoch length during presync, ms. Default 100. */
  readonly epochMs?: number;
  /** When the launch command comes, ms after start. */
  readonly launchAtMs: number;
  readonly wireCost?: WireCostModel;
  /** Device state moved during the pause, bytes. Default 210 KB (QEMU's stream with x-ignore-shared). */
  readonly deviceStateBytes?: number;
  /** Cost of the mandatory full digest scan at pause, ns per page. Default 150. */
  readonly scanNsPerPage?: number;
  readonly guestCost?: GuestCostModel;
  /** Give up (roll back) if the live rounds after launch take longer than this, ms. Default 600 000. */
  readonly maxPostLaunchMs?: number;
  /** Keep the per-step time series. Default true. */
  readonly keepSeries?: boolean;
  /**
   * How long the guest runs on after the pause is asked for, ms (QEMU stops
   * the vCPUs some 15 ms after `migrate`); pages sent just ahead of the pause
   * may still be crossing for that long. Default 0: the pause is immediate.
   */
  readonly pauseLagMs?: number;
}

export interface SimResult extends MigrationMetrics {
  readonly workload: string;
  readonly policy: string;
  readonly series: readonly SeriesPoint[];
  /** Bytes the competing flow carried, and what it would have carried alone, over the presync window. */
  readonly competingBytes: number;
  readonly competingAloneBytes: number;
  /**
   * Bytes sent during presync for pages already sent once before (each
   * page's first copy excluded): the rewrite traffic the paper's measure
   * compares.
   */
  readonly presyncRewriteBytes: number;
}

interface Queued {
  page: number;
  version: number;
  end: number;
}

type RunError = { code: (typeof ErrorCodes)[keyof typeof ErrorCodes]; message: string };

/**
 * One simulated migration's state on its virtual clock: the guest and the
 * target's copy, the link and what is queued on it, the ledger and the
 * accounting. The phase functions below advance it; simulate() calls them.
 */
class SimRun {
  readonly epochMs: number;
  readonly pageCount: number;
  readonly wire: WireCostModel;
  readonly gcost: GuestCostModel;
  readonly keepSeries: boolean;
  readonly link: SimLink;
  readonly guest: SimGuest;
  readonly acct: Accounting;
  readonly ledger: ShellLedger;
  readonly phases = new PhaseMachine();
  // Whole bytes: a page record costs its header (+ payload unless elided), and
  // every pagesPerFrame records a frame header.
  readonly zeroCost: number;
  readonly fullCost: number;
  readonly frameCost: number;
  readonly stale: PageSet;
  /** Pages sent at least once. */
  readonly everSent: PageSet;
  /** Bytes sent during presync for pages sent before. */
  rewriteBytes = 0;
  dirty: PageSet;
  readonly queue: Queued[] = [];
  qHead = 0;
  enqueuedTotal = 0;
  deliveredTotal = 0;
  competingBytes = 0;
  competingAloneBytes = 0;
  slowdownWeighted = 0;
  slowdownTime = 0;
  lastSlowdown = 0;
  epoch = 0;
  t = 0;
  /** When the guest stops, once a pause was asked for (it takes the shell's lag to take effect). */
  stopAt: number | undefined;
  residualPagesAtLaunch = 0;
  converged = true;
  liveRounds = 0;
  error: RunError | null = null;
  pauseAt = -1;

  constructor(readonly cfg: SimConfig) {
    this.epochMs = cfg.epochMs ?? 100;
    const { pageSize, pageCount } = cfg.workload.geometry;
    this.pageCount = pageCount;
    this.wire = cfg.wireCost ?? DEFAULT_WIRE_COST;
    this.gcost = cfg.guestCost ?? DEFAULT_GUEST_COST;
    this.keepSeries = cfg.keepSeries ?? true;
    this.link = new SimLink(cfg.link);
    this.guest = new SimGuest(pageCount, cfg.workload.initialNonZero());
    this.acct = new Accounting(pageCount);
    this.ledger = new ShellLedger(pageSize, this.wire);
    this.zeroCost = this.wire.pageHeaderBytes;
    this.fullCost = this.wire.pageHeaderBytes + pageSize;
    this.frameCost = this.wire.frameHeaderBytes;
    this.stale = this.guest.differing();
    this.everSent = new PageSet(pageCount);
    this.dirty = new PageSet(pageCount);
  }

  /** Queues the stale pages of a prefix of the decision's list that fits its budget. */
  enqueue(d: EpochDecision): Sent {
    const { guest, stale, wire } = this;
    let bytes = 0;
    let pages = 0;
    const budget = d.budgetBytes;
    let i = 0;
    for (; i < d.send.length; i++) {
      const p = d.send[i];
      if (!stale.has(p)) continue; // a policy may only send what the target lacks
      const c = (guest.isZero(p) ? this.zeroCost : this.fullCost) + (pages % wire.pagesPerFrame === 0 ? this.frameCost : 0);
      if (bytes + c > budget) break;
      bytes += c;
      pages++;
      stale.delete(p);
      if (this.everSent.has(p)) {
        if (this.phases.phase === 'presync') this.rewriteBytes += c;
      } else this.everSent.add(p);
      this.enqueuedTotal += c;
      this.queue.push({ page: p, version: guest.source[p], end: this.enqueuedTotal });
      this.acct.onPageSent(p);
    }
    this.ledger.onSend(bytes, pages, i);
    this.link.enqueue(bytes);
    return { bytes, pages };
  }

  /** Advances `dtMs`, the guest running until the pause asked for takes effect. */
  advanceUntilStop(dtMs: number): Step {
    const { t, stopAt } = this;
    if (stopAt === undefined || t + dtMs <= stopAt) return this.advance(dtMs, true);
    if (t >= stopAt) return this.advance(dtMs, false);
    const live = this.advance(stopAt - t, true);
    const still = this.advance(t + dtMs - stopAt, false);
    return { delivered: live.delivered + still.delivered, written: live.written };
  }

  /** Advances the clock `dtMs`: the link delivers, the target applies what arrived, the guest writes if it runs. */
  advance(dtMs: number, guestRuns: boolean): Step {
    const { cfg, link, queue } = this;
    const s = link.step(this.t, dtMs);
    this.deliveredTotal += s.delivered;
    this.ledger.onDelivered(s.delivered);
    this.acct.onBytes(s.delivered);
    if (this.phases.phase === 'presync') {
      this.competingBytes += s.competingDelivered;
      if (link.competingActive(this.t)) this.competingAloneBytes += (cfg.link.bandwidthBytesPerSec * dtMs) / 1000;
    }
    while (this.qHead < queue.length && queue[this.qHead].end <= this.deliveredTotal + 1e-6) {
      const q = queue[this.qHead++];
      this.guest.target[q.page] = q.version;
    }
    if (this.qHead > 4096 && this.qHead * 2 > queue.length) {
      queue.splice(0, this.qHead);
      this.qHead = 0;
    }
    const written = new PageSet(this.pageCount);
    if (guestRuns) {
      cfg.workload.writes(this.t, this.t + dtMs, written);
      this.guest.write(written);
      this.stale.unionWith(written);
      this.acct.onWrites(written);
    }
    this.t += dtMs;
    return { delivered: s.delivered, written };
  }

  observe(phase: 'presync' | 'launched', stepMs: number): EpochObservation {
    const { cfg } = this;
    const { consumed, wireBytesPerPage, offeredBytes, deliveredBytes } = this.ledger.observe();
    return {
      epoch: this.epoch,
      timeMs: this.t,
      epochMs: stepMs,
      phase,
      geometry: cfg.workload.geometry,
      dirty: this.dirty,
      stale: this.stale,
      net: {
        bandwidthBytesPerSec: cfg.link.bandwidthBytesPerSec,
        rttMs: this.link.rttNow(this.t),
        bytesInFlight: this.link.queuedBytes,
        offeredBytes,
        deliveredBytes,
      },
      guestSlowdown: this.slowdownTime > 0 ? this.lastSlowdown : 0,
      ...(phase === 'launched' ? { launchedAtMs: cfg.launchAtMs, pauseLagMs: cfg.pauseLagMs ?? 0 } : {}),
      consumed,
      wireBytesPerPage,
    };
  }

  record(phase: 'presync' | 'launched', stepMs: number, d: EpochDecision, sent: Sent, delivered: number, dirtyPages: number): void {
    if (!this.keepSeries) return;
    this.acct.point({
      tMs: this.t,
      phase,
      sentBytes: sent.bytes,
      sentPages: sent.pages,
      deliveredBytes: delivered,
      budgetBytes: Number.isFinite(d.budgetBytes) ? d.budgetBytes : -1,
      dirtyPages,
      stalePages: this.stale.count(),
      rttMs: this.link.rttNow(this.t),
      throughputBytesPerSec: stepMs > 0 ? (delivered / stepMs) * 1000 : 0,
      ...(d.diag ? { diag: d.diag } : {}),
    });
  }
}

interface Sent {
  readonly bytes: number;
  readonly pages: number;
}

interface Step {
  readonly delivered: number;
  readonly written: PageSet;
}

/** Fixed epochs until the launch command, each charged the guest slowdown our tracking and sending cost. */
function presyncEpochs(sim: SimRun): void {
  const { cfg, gcost } = sim;
  sim.phases.to('presync', 0);
  while (sim.t < cfg.launchAtMs - 1e-9) {
    const stepMs = Math.min(sim.epochMs, cfg.launchAtMs - sim.t);
    const d = cfg.policy.decide(sim.observe('presync', stepMs));
    const sent = sim.enqueue(d);
    const { delivered, written } = sim.advance(stepMs, true);
    sim.lastSlowdown = Math.min(1, (written.count() * gcost.trackUsPerDirtyPage + sent.pages * gcost.sendUsPerPage) / (stepMs * 1000 * gcost.guestCpus));
    sim.slowdownWeighted += sim.lastSlowdown * stepMs;
    sim.slowdownTime += stepMs;
    sim.dirty = written;
    sim.record('presync', stepMs, d, sent, delivered, written.count());
    sim.epoch++;
  }
}

/** The switchover decision: pages sent ahead of the pause cross while the guest runs, then it stops after the shell's lag. */
function switchover(sim: SimRun, d: EpochDecision): void {
  const { cfg, link } = sim;
  sim.converged = d.converged ?? true;
  if (d.abort) {
    sim.error = { code: ErrorCodes.NO_CONVERGENCE, message: `policy ${cfg.policy.name} could not converge under its downtime limit and aborted` };
    return;
  }
  const lag = Math.max(0, cfg.pauseLagMs ?? 0);
  // Pages sent just ahead of the pause, and any still crossing from the
  // last probes: the guest runs while they cross.
  const sent = d.send.length > 0 ? sim.enqueue(d) : { bytes: 0, pages: 0 };
  if (sim.stopAt === undefined) {
    const stepMs = Math.max(0, link.drainMs(sim.t) - lag);
    const { delivered, written } = stepMs > 0 ? sim.advance(stepMs, true) : { delivered: 0, written: new PageSet(sim.pageCount) };
    if (stepMs > 0 || sent.pages > 0) sim.record('launched', stepMs, d, sent, delivered, written.count());
    sim.stopAt = sim.t + lag;
  }
  // The pause takes effect only after the shell's lag; the guest writes on meanwhile.
  if (sim.stopAt > sim.t) sim.advance(sim.stopAt - sim.t, true);
  sim.pauseAt = sim.stopAt;
}

/** A probe round: a close look at a few pages after a while; the rest of the guest is not scanned. */
function probeRound(sim: SimRun, d: EpochDecision, probe: NonNullable<EpochDecision['probe']>, sent: Sent): void {
  if (d.startPause && sim.stopAt === undefined) sim.stopAt = sim.t + Math.max(0, sim.cfg.pauseLagMs ?? 0);
  const stepMs = Math.max(0.1, probe.afterMs);
  const { delivered, written } = sim.advanceUntilStop(stepMs);
  const seen = new PageSet(sim.pageCount);
  for (const p of probe.pages) if (written.has(p)) seen.add(p);
  sim.dirty = seen;
  sim.record('launched', stepMs, d, sent, delivered, seen.count());
}

/** Live rounds after launch until the switchover (pauseAt set) or a failure (error set). */
function liveRounds(sim: SimRun): void {
  const { cfg, link } = sim;
  const maxPostLaunchMs = cfg.maxPostLaunchMs ?? 600_000;
  sim.phases.to('launched', sim.t);
  sim.acct.onLaunch();
  sim.residualPagesAtLaunch = sim.guest.differing().count();
  for (;;) {
    if (sim.t - cfg.launchAtMs > maxPostLaunchMs) {
      sim.error = { code: ErrorCodes.NO_CONVERGENCE, message: `live rounds did not finish within ${maxPostLaunchMs} ms of launch` };
      return;
    }
    if (sim.stopAt !== undefined && sim.t >= sim.stopAt) {
      // A pause started early has taken effect: nothing more to watch for.
      sim.pauseAt = sim.stopAt;
      return;
    }
    const d = cfg.policy.decide(sim.observe('launched', sim.epochMs));
    if (d.diag && typeof d.diag.round === 'number') sim.liveRounds = Math.max(sim.liveRounds, d.diag.round);
    if (d.switchover) return switchover(sim, d);
    const sent = sim.enqueue(d);
    if (d.probe) probeRound(sim, d, d.probe, sent);
    else {
      const stepMs = Math.min(sim.epochMs, Math.max(1, link.drainMs(sim.t)));
      const { delivered, written } = sim.advance(stepMs, true);
      sim.dirty = written;
      sim.record('launched', stepMs, d, sent, delivered, written.count());
    }
    sim.epoch++;
  }
}

/** The result's fields that do not depend on the outcome. */
function resultBase(sim: SimRun): Omit<SimResult, 'outcome' | 'error' | 'launchToRunningMs' | 'downtimeMs' | 'verified'> {
  const { cfg, acct } = sim;
  return {
    workload: cfg.workload.name,
    policy: cfg.policy.name,
    presyncBytes: acct.presyncBytes,
    finalBytes: acct.finalBytes,
    residualPagesAtLaunch: sim.residualPagesAtLaunch,
    wastedPages: acct.wastedPages,
    resentPages: acct.resentPages,
    guestSlowdown: sim.slowdownTime > 0 ? sim.slowdownWeighted / sim.slowdownTime : 0,
    converged: sim.converged,
    liveRounds: sim.liveRounds,
    competingBytes: sim.competingBytes,
    competingAloneBytes: sim.competingAloneBytes,
    presyncRewriteBytes: sim.rewriteBytes,
    series: acct.series,
  };
}

function rolledBack(sim: SimRun, error: RunError | null, reason = error?.message): SimResult {
  sim.phases.to('rollback', sim.t, reason);
  return { ...resultBase(sim), outcome: 'rolled-back', error, launchToRunningMs: null, downtimeMs: null, verified: false };
}

/** The guest is paused: the final full scan, the residual copy, verify, device state and handover. */
function completion(sim: SimRun): SimResult {
  const { cfg, link } = sim;
  const deviceStateBytes = cfg.deviceStateBytes ?? 210_000;
  const scanNsPerPage = cfg.scanNsPerPage ?? 150;
  sim.phases.to('final-copy', sim.t);
  sim.t += (sim.pageCount * scanNsPerPage) / 1e6; // the final full scan finds every page still differing
  const residual = PageSet.copyOf(sim.stale);
  sim.enqueue({ send: residual.toArray(), budgetBytes: Infinity, switchover: false });
  const drain = link.drainMs(sim.t);
  if (drain > 0) sim.advance(drain, false);
  sim.t += cfg.link.rttMs / 2; // the last page's propagation
  sim.phases.to('verify', sim.t);
  const verified = sim.guest.identical();
  sim.acct.onBytes(sim.pageCount > 0 ? 64 : 0); // digest-of-digests exchange
  sim.t += cfg.link.rttMs;
  if (!verified) return rolledBack(sim, { code: ErrorCodes.VERIFY, message: 'target image differs from the source after the final copy' }, 'target image differs from source');
  sim.phases.to('handover', sim.t);
  sim.acct.onBytes(deviceStateBytes);
  sim.t += (deviceStateBytes / link.shareAt(sim.t, Infinity)) * 1000 + cfg.link.rttMs / 2;
  sim.phases.to('done', sim.t);
  return { ...resultBase(sim), outcome: 'done', error: null, launchToRunningMs: sim.t - cfg.launchAtMs, downtimeMs: sim.t - sim.pauseAt, verified: true };
}

/**
 * Discrete-event simulation of one migration on a virtual clock. Before launch
 * time advances in fixed epochs; after launch each step lasts as long as the
 * link needs to carry what the policy queued (at least 1 ms, at most an
 * epoch), so live rounds and the final copy are timed precisely.
 */
export function simulate(cfg: SimConfig): SimResult {
  const epochMs = cfg.epochMs ?? 100;
  if (!(epochMs > 0)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `epochMs must be positive, got ${epochMs}`);
  if (!(cfg.launchAtMs >= 0)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `launchAtMs must be non-negative, got ${cfg.launchAtMs}`);
  const sim = new SimRun(cfg);
  presyncEpochs(sim);
  liveRounds(sim);
  if (sim.pauseAt < 0) return rolledBack(sim, sim.error);
  return completion(sim);
}
