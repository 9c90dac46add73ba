import { LiveRounds } from '../live-rounds.ts';
import type { EpochDecision, EpochObservation, MigrationPolicy, PolicyContext } from '../types.ts';
import { liveRoundConfig, type PolicyOptions } from './options.ts';

const IDLE: EpochDecision = { send: new Uint32Array(0), budgetBytes: 0, switchover: false };

/**
 * Stock iterative pre-copy, as QEMU does it: nothing moves before launch; after
 * launch the whole RAM is copied at up to max-bandwidth (128 MiB/s by default),
 * then the pages dirtied meanwhile, round after round, until the rest fits the
 * 300 ms downtime limit. Unlike QEMU it stops after `maxRounds` and reports
 * that it did not converge instead of looping forever.
 */
export class PrecopyPolicy implements MigrationPolicy {
  readonly name = 'precopy';
  private readonly live: LiveRounds;

  constructor(_ctx: PolicyContext, opts: PolicyOptions = {}) {
    this.live = new LiveRounds(liveRoundConfig(opts));
  }

  decide(obs: EpochObservation): EpochDecision {
    return obs.phase === 'presync' ? IDLE : this.live.decide(obs);
  }
}
