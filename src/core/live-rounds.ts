import { PageSet, type ReadonlyPageSet } from './pageset.ts';
import { estimateDowntime, shouldSwitchover, type SwitchoverCosts, DEFAULT_SWITCHOVER_COSTS } from './downtime.ts';
import { SendPrefix, takeHead } from './send-prefix.ts';
import type { EpochDecision, EpochObservation } from './types.ts';

/**
 * Iterative live copy after launch, as QEMU's pre-copy does it (ram.c,
 * migration.c): a round sends the pages that were stale when it began; when it
 * ends, the pages dirtied meanwhile form the next round; the guest is paused
 * once what is left fits the downtime limit. Every policy uses this after
 * launch; they differ in how much is left by then.
 */
export interface LiveRoundConfig {
  /** Pause only when the expected downtime is at most this. QEMU's default is 300 ms. */
  readonly downtimeLimitMs: number;
  /** Give up converging after this many rounds (QEMU has no bound and can loop forever). */
  readonly maxRounds: number;
  /** Live rounds to run even when the residual already fits: each one shrinks the pause. */
  readonly minRounds: number;
  /**
   * ...unless the pause expected right now is at most this, ms: then a round
   * (a full scan of the guest, then its sends) costs more launch→running
   * time than the pause it could save. 0 = always run minRounds.
   */
  readonly pauseNowBelowMs: number;
  /** Cap on the live copy rate, bytes/s (QEMU's max-bandwidth). Infinity = the link. */
  readonly maxBandwidthBytesPerSec: number;
  /** After maxRounds without convergence: pause anyway ('force') or roll back ('abort'). */
  readonly onNoConvergence: 'force' | 'abort';
  readonly switchoverCosts: SwitchoverCosts;
}

export const QEMU_LIKE_LIVE_ROUNDS: LiveRoundConfig = {
  downtimeLimitMs: 300,
  maxRounds: 30,
  minRounds: 0,
  pauseNowBelowMs: 0,
  maxBandwidthBytesPerSec: 128 * 1024 * 1024,
  onNoConvergence: 'force',
  switchoverCosts: DEFAULT_SWITCHOVER_COSTS,
};

export class LiveRounds {
  private round = 0;
  /** Pages of the current round not yet handed to the shell. */
  private roundPages: PageSet | null = null;
  private lastSend: Uint32Array = new Uint32Array(0);
  private readonly prefix = new SendPrefix();

  constructor(private readonly cfg: LiveRoundConfig) {}

  get rounds(): number {
    return this.round;
  }

  /**
   * `hint.roundIsFutile`: the caller expects the pages a round would send to
   * be rewritten before it ends (a predictor's view), so the round could not
   * shrink the pause; pause now if the residual fits the downtime limit.
   */
  decide(obs: EpochObservation, hint: { readonly roundIsFutile?: boolean } = {}): EpochDecision {
    const stale: ReadonlyPageSet = obs.stale;
    const bw = Math.min(obs.net.bandwidthBytesPerSec, this.cfg.maxBandwidthBytesPerSec);
    // A round sends each of its pages once; pages written after being sent wait for the next round.
    if (this.roundPages) {
      for (let i = 0; i < obs.consumed && i < this.lastSend.length; i++) this.roundPages.delete(this.lastSend[i]);
      this.roundPages.intersectWith(stale);
    }
    if (!this.roundPages || this.roundPages.isEmpty()) {
      const est = estimateDowntime(stale.count(), obs.wireBytesPerPage, bw, obs.net.rttMs, this.cfg.switchoverCosts);
      const fits = shouldSwitchover(est, obs.downtimeLimitMs ?? this.cfg.downtimeLimitMs);
      const diag = { round: this.round, expectedDowntimeMs: est.expectedDowntimeMs };
      if (fits && (this.round >= this.cfg.minRounds || est.expectedDowntimeMs <= this.cfg.pauseNowBelowMs || hint.roundIsFutile === true)) {
        return { send: new Uint32Array(0), budgetBytes: 0, switchover: true, converged: true, diag };
      }
      if (this.round >= this.cfg.maxRounds) {
        const abort = this.cfg.onNoConvergence === 'abort';
        return { send: new Uint32Array(0), budgetBytes: 0, switchover: true, converged: false, abort, diag };
      }
      this.round++;
      this.roundPages = PageSet.copyOf(stale);
      if (this.roundPages.isEmpty()) {
        // Nothing stale yet not fitting: only fixed costs exceed the limit; pause anyway.
        this.lastSend = new Uint32Array(0);
        return { send: this.lastSend, budgetBytes: 0, switchover: true, converged: fits, diag };
      }
    }
    const budget = Number.isFinite(bw) ? (bw * obs.epochMs) / 1000 : Number.MAX_SAFE_INTEGER;
    const limit = Number.isFinite(bw) ? this.prefix.limit(budget, obs.wireBytesPerPage, obs.consumed) : Infinity;
    this.lastSend = takeHead(this.roundPages, limit, this.prefix);
    return {
      send: this.lastSend,
      budgetBytes: budget,
      switchover: false,
      diag: { round: this.round },
    };
  }
}
