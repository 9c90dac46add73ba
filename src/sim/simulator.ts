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
  const { pageSize, pageCount } = cfg.workload.geometry;
  const wire = cfg.wireCost ?? DEFAULT_WIRE_COST;
  const gcost = cfg.guestCost ?? DEFAULT_GUEST_COST;
  const deviceStateBytes = cfg.deviceStateBytes ?? 210_000;
  const scanNsPerPage = cfg.scanNsPerPage ?? 150;
  const maxPostLaunchMs = cfg.maxPostLaunchMs ?? 600_000;
  const keepSeries = cfg.keepSeries ?? true;
  const link = new SimLink(cfg.link);
  const guest = new SimGuest(pageCount, cfg.workload.initialNonZero());
  const acct = new Accounting(pageCount);
  const ledger = new ShellLedger(pageSize, wire);
  const phases = new PhaseMachine();
  // Whole bytes: a page record costs its header (+ payload unless elided), and
  // every pagesPerFrame records a frame header.
  const zeroCost = wire.pageHeaderBytes;
  const fullCost = wire.pageHeaderBytes + pageSize;
  const frameCost = wire.frameHeaderBytes;

  const stale = guest.differing();
  let dirty = new PageSet(pageCount);
  const queue: Queued[] = [];
  let qHead = 0;
  let enqueuedTotal = 0;
  let deliveredTotal = 0;
  let competingBytes = 0;
  let competingAloneBytes = 0;
  let slowdownWeighted = 0;
  let slowdownTime = 0;
  let epoch = 0;
  let t = 0;

  const everSent = new PageSet(pageCount);
  let rewriteBytes = 0;
  const enqueue = (d: EpochDecision): { bytes: number; pages: number } => {
    let bytes = 0;
    let pages = 0;
    const budget = d.budgetBytes;
    let i = 0;
    for (; i < d.send.length; i++) {
      const p = d.send[i];
      if (!stale.has(p)) continue; // a policy may only send what the target lacks
      const c = (guest.isZero(p) ? zeroCost : fullCost) + (pages % wire.pagesPerFrame === 0 ? frameCost : 0);
      if (bytes + c > budget) break;
      bytes += c;
      pages++;
      stale.delete(p);
      if (everSent.has(p)) {
        if (phases.phase === 'presync') rewriteBytes += c;
      } else everSent.add(p);
      enqueuedTotal += c;
      queue.push({ page: p, version: guest.source[p], end: enqueuedTotal });
      acct.onPageSent(p);
    }
    ledger.onSend(bytes, pages, i);
    link.enqueue(bytes);
    return { bytes, pages };
  };

  /** When the guest stops, once a pause was asked for (it takes the shell's lag to take effect). */
  let stopAt: number | undefined;
  const advanceUntilStop = (dtMs: number): { delivered: number; written: PageSet } => {
    if (stopAt === undefined || t + dtMs <= stopAt) return advance(dtMs, true);
    if (t >= stopAt) return advance(dtMs, false);
    const live = advance(stopAt - t, true);
    const still = advance(t + dtMs - stopAt, false);
    return { delivered: live.delivered + still.delivered, written: live.written };
  };
  const advance = (dtMs: number, guestRuns: boolean): { delivered: number; written: PageSet } => {
    const s = link.step(t, dtMs);
    deliveredTotal += s.delivered;
    ledger.onDelivered(s.delivered);
    acct.onBytes(s.delivered);
    if (phases.phase === 'presync') {
      competingBytes += s.competingDelivered;
      if (link.competingActive(t)) competingAloneBytes += (cfg.link.bandwidthBytesPerSec * dtMs) / 1000;
    }
    while (qHead < queue.length && queue[qHead].end <= deliveredTotal + 1e-6) {
      const q = queue[qHead++];
      guest.target[q.page] = q.version;
    }
    if (qHead > 4096 && qHead * 2 > queue.length) {
      queue.splice(0, qHead);
      qHead = 0;
    }
    const written = new PageSet(pageCount);
    if (guestRuns) {
      cfg.workload.writes(t, t + dtMs, written);
      guest.write(written);
      stale.unionWith(written);
      acct.onWrites(written);
    }
    t += dtMs;
    return { delivered: s.delivered, written };
  };

  const observe = (phase: 'presync' | 'launched', stepMs: number): EpochObservation => {
    const { consumed, wireBytesPerPage, offeredBytes, deliveredBytes } = ledger.observe();
    return {
      epoch,
      timeMs: t,
      epochMs: stepMs,
      phase,
      geometry: cfg.workload.geometry,
      dirty,
      stale,
      net: {
        bandwidthBytesPerSec: cfg.link.bandwidthBytesPerSec,
        rttMs: link.rttNow(t),
        bytesInFlight: link.queuedBytes,
        offeredBytes,
        deliveredBytes,
      },
      guestSlowdown: slowdownTime > 0 ? lastSlowdown : 0,
      ...(phase === 'launched' ? { launchedAtMs: cfg.launchAtMs, pauseLagMs: cfg.pauseLagMs ?? 0 } : {}),
      consumed,
      wireBytesPerPage,
    };
  };
  let lastSlowdown = 0;

  const record = (phase: 'presync' | 'launched', stepMs: number, d: EpochDecision, sent: { bytes: number; pages: number }, delivered: number, dirtyPages: number): void => {
    if (!keepSeries) return;
    acct.point({
      tMs: t,
      phase,
      sentBytes: sent.bytes,
      sentPages: sent.pages,
      deliveredBytes: delivered,
      budgetBytes: Number.isFinite(d.budgetBytes) ? d.budgetBytes : -1,
      dirtyPages,
      stalePages: stale.count(),
      rttMs: link.rttNow(t),
      throughputBytesPerSec: stepMs > 0 ? (delivered / stepMs) * 1000 : 0,
      ...(d.diag ? { diag: d.diag } : {}),
    });
  };

  // ---- presync: fixed epochs until the launch command.
  phases.to('presync', 0);
  while (t < cfg.launchAtMs - 1e-9) {
    const stepMs = Math.min(epochMs, cfg.launchAtMs - t);
    const d = cfg.policy.decide(observe('presync', stepMs));
    const sent = enqueue(d);
    const { delivered, written } = advance(stepMs, true);
    lastSlowdown = Math.min(1, (written.count() * gcost.trackUsPerDirtyPage + sent.pages * gcost.sendUsPerPage) / (stepMs * 1000 * gcost.guestCpus));
    slowdownWeighted += lastSlowdown * stepMs;
    slowdownTime += stepMs;
    dirty = written;
    record('presync', stepMs, d, sent, delivered, written.count());
    epoch++;
  }

  // ---- launch.
  phases.to('launched', t);
  acct.onLaunch();
  const residualPagesAtLaunch = guest.differing().count();
  let converged = true;
  let liveRounds = 0;
  let error: { code: typeof ErrorCodes[keyof typeof ErrorCodes]; message: string } | null = null;
  let pauseAt = -1;

  for (;;) {
    if (t - cfg.launchAtMs > maxPostLaunchMs) {
      error = { code: ErrorCodes.NO_CONVERGENCE, message: `live rounds did not finish within ${maxPostLaunchMs} ms of launch` };
      break;
    }
    if (stopAt !== undefined && t >= stopAt) {
      // A pause started early has taken effect: nothing more to watch for.
      pauseAt = stopAt;
      break;
    }
    const d = cfg.policy.decide(observe('launched', epochMs));
    if (d.diag && typeof d.diag.round === 'number') liveRounds = Math.max(liveRounds, d.diag.round);
    if (d.switchover) {
      converged = d.converged ?? true;
      if (d.abort) {
        error = { code: ErrorCodes.NO_CONVERGENCE, message: `policy ${cfg.policy.name} could not converge under its downtime limit and aborted` };
        break;
      }
      const lag = Math.max(0, cfg.pauseLagMs ?? 0);
      // Pages sent just ahead of the pause, and any still crossing from the
      // last probes: the guest runs while they cross.
      const sent = d.send.length > 0 ? enqueue(d) : { bytes: 0, pages: 0 };
      if (stopAt === undefined) {
        const stepMs = Math.max(0, link.drainMs(t) - lag);
        const { delivered, written } = stepMs > 0 ? advance(stepMs, true) : { delivered: 0, written: new PageSet(pageCount) };
        if (stepMs > 0 || sent.pages > 0) record('launched', stepMs, d, sent, delivered, written.count());
        stopAt = t + lag;
      }
      // The pause takes effect only after the shell's lag; the guest writes on meanwhile.
      if (stopAt > t) advance(stopAt - t, true);
      pauseAt = stopAt;
      break;
    }
    const sent = enqueue(d);
    if (d.probe) {
      if (d.startPause && stopAt === undefined) stopAt = t + Math.max(0, cfg.pauseLagMs ?? 0);
      // A close look at a few pages only: the rest of the guest is not scanned.
      const stepMs = Math.max(0.1, d.probe.afterMs);
      const { delivered, written } = advanceUntilStop(stepMs);
      const seen = new PageSet(pageCount);
      for (const p of d.probe.pages) if (written.has(p)) seen.add(p);
      dirty = seen;
      record('launched', stepMs, d, sent, delivered, seen.count());
      epoch++;
      continue;
    }
    const stepMs = Math.min(epochMs, Math.max(1, link.drainMs(t)));
    const { delivered, written } = advance(stepMs, true);
    dirty = written;
    record('launched', stepMs, d, sent, delivered, written.count());
    epoch++;
  }

  const base = {
    workload: cfg.workload.name,
    policy: cfg.policy.name,
    presyncBytes: 0,
    finalBytes: 0,
    residualPagesAtLaunch,
    wastedPages: acct.wastedPages,
    resentPages: 0,
    guestSlowdown: slowdownTime > 0 ? slowdownWeighted / slowdownTime : 0,
    converged,
    liveRounds,
    competingBytes,
    competingAloneBytes,
    presyncRewriteBytes: rewriteBytes,
  };

  if (pauseAt < 0) {
    phases.to('rollback', t, error?.message);
    return {
      ...base,
      outcome: 'rolled-back',
      error,
      launchToRunningMs: null,
      downtimeMs: null,
      presyncBytes: acct.presyncBytes,
      finalBytes: acct.finalBytes,
      resentPages: acct.resentPages,
      verified: false,
      series: acct.series,
    };
  }

  // ---- switchover: the guest is paused from here on.
  phases.to('final-copy', t);
  t += (pageCount * scanNsPerPage) / 1e6; // the final full scan finds every page still differing
  const residual = PageSet.copyOf(stale);
  enqueue({ send: residual.toArray(), budgetBytes: Infinity, switchover: false });
  const drain = link.drainMs(t);
  if (drain > 0) advance(drain, false);
  t += cfg.link.rttMs / 2; // the last page's propagation
  phases.to('verify', t);
  const verified = guest.identical();
  acct.onBytes(pageCount > 0 ? 64 : 0); // digest-of-digests exchange
  t += cfg.link.rttMs;
  if (!verified) {
    phases.to('rollback', t, 'target image differs from source');
    return {
      ...base,
      outcome: 'rolled-back',
      error: { code: ErrorCodes.VERIFY, message: 'target image differs from the source after the final copy' },
      launchToRunningMs: null,
      downtimeMs: null,
      presyncBytes: acct.presyncBytes,
      finalBytes: acct.finalBytes,
      resentPages: acct.resentPages,
      verified: false,
      series: acct.series,
    };
  }
  phases.to('handover', t);
  acct.onBytes(deviceStateBytes);
  t += (deviceStateBytes / link.shareAt(t, Infinity)) * 1000 + cfg.link.rttMs / 2;
  phases.to('done', t);
  return {
    ...base,
    outcome: 'done',
    error: null,
    launchToRunningMs: t - cfg.launchAtMs,
    downtimeMs: t - pauseAt,
    presyncBytes: acct.presyncBytes,
    finalBytes: acct.finalBytes,
    resentPages: acct.resentPages,
    verified: true,
    series: acct.series,
  };
}
