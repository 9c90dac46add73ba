import { ErrorCodes, PresyncError } from '../errors.ts';
import { LiveRounds } from '../live-rounds.ts';
import type { EpochDecision, EpochObservation, FutureKnowledge, MigrationPolicy, PolicyContext } from '../types.ts';
import { liveRoundConfig, PAUSE_NOW_BELOW_MS, type PolicyOptions } from './options.ts';

/**
 * The lower bound on sync traffic: it knows every future write and the
 * launch moment, and sends each page once, in the first epoch after its last
 * write before launch. A page that will be written again is never sent early,
 * so nothing is wasted; a page written during the last epoch is left for the
 * copy after launch, as it is for every policy. Given the bandwidth to keep
 * up, no policy sends fewer bytes before launch while leaving as little
 * behind. After launch it runs live rounds like presync-naive.
 */
export class OraclePolicy implements MigrationPolicy {
  readonly name = 'oracle';
  private readonly live: LiveRounds;
  private readonly future: FutureKnowledge;
  /** Per page, the index of the last grid interval before launch in which it is written (−1: none). */
  private lastWrite: Int32Array | null = null;
  private t0 = 0;
  private step = 0;

  constructor(private readonly ctx: PolicyContext, opts: PolicyOptions = {}) {
    if (!ctx.future) throw new PresyncError(ErrorCodes.BAD_POLICY, 'the oracle needs future knowledge (ctx.future), which only the simulator provides');
    this.future = ctx.future;
    this.live = new LiveRounds(liveRoundConfig(opts, { minRounds: 1, pauseNowBelowMs: PAUSE_NOW_BELOW_MS, maxBandwidthBytesPerSec: Infinity }));
  }

  /** Walks the future once on the epoch grid that starts at the first observation. */
  private plan(t0: number, step: number): Int32Array {
    const last = new Int32Array(this.ctx.geometry.pageCount).fill(-1);
    const launch = this.future.launchAtMs;
    for (let k = 0; t0 + k * step < launch; k++) {
      const from = t0 + k * step;
      this.future.writes(from, Math.min(from + step, launch)).forEach((p) => {
        last[p] = k;
      });
    }
    this.t0 = t0;
    this.step = step;
    return last;
  }

  decide(obs: EpochObservation): EpochDecision {
    if (obs.phase === 'launched') return this.live.decide(obs);
    const last = this.lastWrite ?? (this.lastWrite = this.plan(obs.timeMs, obs.epochMs));
    const k = Math.floor((obs.timeMs - this.t0) / this.step + 1e-9);
    const out: number[] = [];
    // Sendable: no write from this interval on, until launch.
    obs.stale.forEach((p) => {
      if (last[p] < k) out.push(p);
    });
    return {
      send: Uint32Array.from(out),
      budgetBytes: (obs.net.bandwidthBytesPerSec * obs.epochMs) / 1000,
      switchover: false,
      diag: { heldPages: obs.stale.count() - out.length },
    };
  }
}
