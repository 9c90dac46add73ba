import { QEMU_LIKE_LIVE_ROUNDS, type LiveRoundConfig } from '../live-rounds.ts';

/** Knobs every policy accepts; each has a documented default. */
export interface PolicyOptions {
  /** Downtime limit for the switchover decision, ms. Default 300 (QEMU's default). */
  readonly downtimeLimitMs?: number;
  /** Rate cap for the copy after launch, bytes/s. Default 128 MiB/s for precopy (QEMU's), the link for presync policies. */
  readonly maxBandwidthBytesPerSec?: number;
  /** Bound on live rounds after launch. Default 30. */
  readonly maxRounds?: number;
  /** What to do when the live rounds cannot converge. Default 'force' (pause anyway, report converged=false). */
  readonly onNoConvergence?: 'force' | 'abort';
}

/**
 * The presync policies pause at once at launch when the residual would cost at
 * most this much pause: about 400 pages at 1 Gbit/s plus a round trip. A live
 * round first would add a full scan of the guest to launch→running to save a
 * few milliseconds of pause.
 */
export const PAUSE_NOW_BELOW_MS = 30;

export function liveRoundConfig(opts: PolicyOptions, defaults: Partial<LiveRoundConfig> = {}): LiveRoundConfig {
  return {
    ...QEMU_LIKE_LIVE_ROUNDS,
    ...defaults,
    ...(opts.downtimeLimitMs !== undefined ? { downtimeLimitMs: opts.downtimeLimitMs } : {}),
    ...(opts.maxBandwidthBytesPerSec !== undefined ? { maxBandwidthBytesPerSec: opts.maxBandwidthBytesPerSec } : {}),
    ...(opts.maxRounds !== undefined ? { maxRounds: opts.maxRounds } : {}),
    ...(opts.onNoConvergence !== undefined ? { onNoConvergence: opts.onNoConvergence } : {}),
  };
}
