import { DEFAULT_FRESH_FIRST, FreshFirst, type FreshFirstConfig } from '../fresh-first.ts';
import { LiveRounds } from '../live-rounds.ts';
import { SendPrefix, takeHead } from '../send-prefix.ts';
import { createPredictor, type PredictorOptions } from '../predict/index.ts';
import { SlowStartController, type SlowStartConfig } from '../rate/slow-start.ts';
import type { EpochDecision, EpochObservation, MigrationPolicy, PolicyContext } from '../types.ts';
import { DEFAULT_HOLD_BACK, HoldBack, type HoldBackConfig } from './hold-back.ts';
import { liveRoundConfig, PAUSE_NOW_BELOW_MS, type PolicyOptions } from './options.ts';

/** The knobs of the presync family beyond the shared PolicyOptions; every field has a default. */
export interface PresyncTuning {
  /** Which rewrite predictor feeds the hold-back rule. Default 'reuse' (docs/algorithms.md: why). */
  readonly predictor?: string;
  readonly predictorOptions?: PredictorOptions;
  readonly holdBack?: Partial<HoldBackConfig>;
  readonly rate?: Partial<SlowStartConfig>;
  /**
   * Fresh-first switchover for a hot set no live round can catch (see
   * fresh-first.ts): true or a partial config turns it on, false off; the
   * default is the mode's (on for `presync-fresh` only).
   */
  readonly freshFirst?: Partial<FreshFirstConfig> | boolean;
}

/**
 * Pre-synchronization with the paper's two ideas, each switchable:
 * `predict` holds back pages likely to be rewritten soon (memory change
 * probabilistic prediction, see hold-back.ts), `slowStart` paces the sync with
 * a TCP-like window (slow-start adaptive policy, see rate/slow-start.ts).
 * With both it is `presync`, the paper's policy and presync's default. After
 * launch it runs live rounds over the whole link like presync-naive.
 */
export class PresyncPolicy implements MigrationPolicy {
  readonly name: string;
  private readonly live: LiveRounds;
  private readonly hold: HoldBack | null;
  private readonly rate: SlowStartController | null;
  private readonly freshCfg: FreshFirstConfig | null;
  private fresh: FreshFirst | null = null;
  private readonly prefix = new SendPrefix();

  constructor(
    ctx: PolicyContext,
    opts: PolicyOptions,
    mode: { readonly name: string; readonly predict: boolean; readonly slowStart: boolean; readonly freshFirst?: boolean },
    tuning: PresyncTuning = {},
  ) {
    this.name = mode.name;
    this.live = new LiveRounds(liveRoundConfig(opts, { minRounds: 1, pauseNowBelowMs: PAUSE_NOW_BELOW_MS, maxBandwidthBytesPerSec: Infinity }));
    const pages = ctx.geometry.pageCount;
    this.hold = mode.predict
      ? new HoldBack(createPredictor(tuning.predictor ?? 'reuse', pages, tuning.predictorOptions), pages, tuning.holdBack)
      : null;
    this.rate = mode.slowStart ? new SlowStartController(tuning.rate) : null;
    const fresh = tuning.freshFirst ?? mode.freshFirst ?? false;
    // Fresh-first acts on the predictor's futility verdict: without prediction it never starts.
    this.freshCfg = mode.predict && fresh !== false ? { ...DEFAULT_FRESH_FIRST, ...(fresh === true ? {} : fresh) } : null;
  }

  private launchJudged = false;

  private roundIsFutile(obs: EpochObservation): boolean {
    // Judged once, at the first decision after launch: later rounds are the live copy's own business.
    if (!this.hold || this.launchJudged) return false;
    this.launchJudged = true;
    const stale = obs.stale.toArray();
    if (stale.length === 0) return false;
    const p = new Float64Array(stale.length);
    this.hold.predictor.probRewriteMany(stale, 1, p);
    let expected = 0;
    for (const x of p) expected += x;
    return expected >= FUTILE_ROUND_SHARE * stale.length;
  }

  decide(obs: EpochObservation): EpochDecision {
    if (obs.phase === 'launched') {
      if (this.fresh) return this.fresh.decide(obs);
      const futile = this.roundIsFutile(obs);
      const d = this.live.decide(obs, { roundIsFutile: futile });
      const expected = d.diag?.expectedDowntimeMs ?? 0;
      // Only when futility, not a short pause, made the live rounds give up.
      if (futile && d.switchover && d.converged !== false && expected > PAUSE_NOW_BELOW_MS) {
        // Without the watch (fresh-first off, or not worth it), the hot set
        // still fills the shell's pause lag: what crosses while QEMU sets up
        // its stream is not in the pause, unless the guest rewrites it first.
        const cfg = this.freshCfg && FreshFirst.worthWatching(obs.stale.count(), obs.wireBytesPerPage, obs.net.bandwidthBytesPerSec, this.freshCfg)
          ? this.freshCfg
          : { ...DEFAULT_FRESH_FIRST, maxWaitMs: 0 };
        this.fresh = new FreshFirst(obs.stale, obs.timeMs, cfg);
        return this.fresh.start(obs);
      }
      return d;
    }
    const linkBudget = (obs.net.bandwidthBytesPerSec * obs.epochMs) / 1000;
    const diag: Record<string, number> = {};
    // The budget below never exceeds the link's: the list needs to go no further.
    const limit = this.prefix.limit(linkBudget, obs.wireBytesPerPage, obs.consumed);
    let send: Uint32Array;
    // Pages that could go this epoch, beyond the list's end too.
    let sendable: number;
    if (this.hold) {
      this.hold.predictor.observe(obs.dirty, obs.epoch);
      const r = this.hold.decide({
        epoch: obs.epoch,
        stale: obs.stale,
        dirtyPages: obs.dirty.count(),
        dirty: obs.dirty,
        bandwidthBytesPerSec: obs.net.bandwidthBytesPerSec,
        wireBytesPerPage: obs.wireBytesPerPage,
        maxSend: limit,
      });
      send = r.send;
      this.prefix.handed(send.length, r.cut);
      sendable = r.sendable;
      diag.heldPages = r.held;
      diag.expectedExtraResidual = r.expectedExtraResidual;
      diag.forcedPages = r.forced;
    } else {
      send = takeHead(obs.stale, limit, this.prefix);
      sendable = send.length < limit ? send.length : obs.stale.count();
    }
    let budget = linkBudget;
    if (this.rate) {
      const d = this.rate.update({
        offeredBytes: obs.net.offeredBytes,
        deliveredBytes: obs.net.deliveredBytes,
        bytesInFlight: obs.net.bytesInFlight,
        // A prior is no baseline: taken as one, the first real RTT looks like congestion.
        rttMs: obs.net.rttSamples === 0 ? Number.NaN : obs.net.rttMs,
        guestSlowdown: obs.guestSlowdown,
        sendable: send.length > 0,
      });
      budget = Math.min(linkBudget, Math.max(d.windowBytes, pauseCapFloor(obs, send, sendable - send.length, this.hold, diag.expectedExtraResidual ?? 0)));
      diag.windowBytes = d.windowBytes;
      diag.ssthreshBytes = Number.isFinite(this.rate.ssthreshBytes) ? this.rate.ssthreshBytes : -1;
    }
    return { send, budgetBytes: budget, switchover: false, diag };
  }
}

/**
 * The least the window may let through this epoch: what it leaves unsent is
 * residual at a launch just as a held page is, so together with what holding
 * is expected to add it stays within the added-pause cap (`addedPauseMs` at
 * the link rate). An unsent page costs what it adds to naive's residual: one
 * page, unless it was written in the last epoch and is likely to be written
 * again in the next (1 − that probability by the predictor; 0 without one): a
 * hot buffer page left unsent costs nothing, it is stale at a launch whatever
 * is sent.
 * Counted from the end of the list, where the window cuts. A guest that
 * writes faster than the window grows (a compressor) is then sent at its pace
 * rather than left to pile up, while the window still paces a hot set.
 */
function pauseCapFloor(obs: EpochObservation, send: Uint32Array, beyond: number, hold: HoldBack | null, heldExtra: number): number {
  const capMs = hold?.cfg.addedPauseMs ?? DEFAULT_HOLD_BACK.addedPauseMs;
  const capPages = (capMs * obs.net.bandwidthBytesPerSec) / 1000 / Math.max(1, obs.wireBytesPerPage);
  // Pages past the end of a cut list (`beyond`) are the list's unseen tail: each is counted as a
  // whole page of residual if left (the most a page can cost), so the floor never falls short.
  if (beyond >= capPages - heldExtra) return (send.length + beyond - Math.max(0, Math.floor(capPages - heldExtra))) * obs.wireBytesPerPage;
  const leave = Math.max(0, capPages - heldExtra - beyond);
  let next: Float64Array | null = null;
  if (hold) {
    next = new Float64Array(send.length);
    hold.predictor.probRewriteMany(send, 1, next);
  }
  let cost = 0;
  let i = send.length;
  while (i > 0) {
    const c = !obs.dirty.has(send[i - 1]) ? 1 : next ? 1 - next[i - 1] : 0;
    if (cost + c > leave) break;
    cost += c;
    i--;
  }
  return i * obs.wireBytesPerPage;
}

/**
 * At launch, a live round sends what is stale while the guest runs so that
 * the pause has less to move. If the predictor expects most of those pages
 * to be written again within an epoch (about a round's length: a hot frame
 * buffer), the round cannot shrink the pause and only delays it.
 */
const FUTILE_ROUND_SHARE = 0.8;

export function createPresync(ctx: PolicyContext, opts: PolicyOptions = {}, tuning: PresyncTuning = {}): PresyncPolicy {
  return new PresyncPolicy(ctx, opts, { name: 'presync', predict: true, slowStart: true }, tuning);
}

/**
 * `presync` with the fresh-first switchover: at a futile launch it watches
 * the hot set and sends a burst of writes just ahead of the pause. Shorter
 * pauses for frame-buffer workloads, at the cost of waiting for the burst
 * (docs/algorithms.md, docs/qemu.md for the measured trade).
 */
export function createPresyncFresh(ctx: PolicyContext, opts: PolicyOptions = {}, tuning: PresyncTuning = {}): PresyncPolicy {
  return new PresyncPolicy(ctx, opts, { name: 'presync-fresh', predict: true, slowStart: true, freshFirst: true }, tuning);
}
