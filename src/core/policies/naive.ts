import { LiveRounds } from '../live-rounds.ts';
import { SendPrefix, takeHead } from '../send-prefix.ts';
import type { EpochDecision, EpochObservation, MigrationPolicy, PolicyContext } from '../types.ts';
import { liveRoundConfig, PAUSE_NOW_BELOW_MS, type PolicyOptions } from './options.ts';

/**
 * Pre-synchronization without judgement: every epoch, every page the target
 * lacks is sent, lowest index first, as fast as the link allows. It keeps the
 * target closest to the source at any moment and is the baseline the paper's
 * transfer reduction is measured against; it resends hot pages every epoch.
 * After launch it runs one more live round before pausing, so the pause
 * covers only what was written during that round.
 */
export class NaivePresyncPolicy implements MigrationPolicy {
  readonly name = 'presync-naive';
  private readonly live: LiveRounds;
  private readonly prefix = new SendPrefix();

  constructor(_ctx: PolicyContext, opts: PolicyOptions = {}) {
    this.live = new LiveRounds(liveRoundConfig(opts, { minRounds: 1, pauseNowBelowMs: PAUSE_NOW_BELOW_MS, maxBandwidthBytesPerSec: Infinity }));
  }

  decide(obs: EpochObservation): EpochDecision {
    if (obs.phase === 'launched') return this.live.decide(obs);
    const budgetBytes = (obs.net.bandwidthBytesPerSec * obs.epochMs) / 1000;
    const limit = this.prefix.limit(budgetBytes, obs.wireBytesPerPage, obs.consumed);
    return { send: takeHead(obs.stale, limit, this.prefix), budgetBytes, switchover: false };
  }
}
