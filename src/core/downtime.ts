/**
 * Switchover planning: when is it safe to pause the guest, and what will the
 * pause cost? Expected downtime = time to move what is pending + the fixed
 * costs of a switchover (one round trip to verify, device state).
 */
export interface SwitchoverEstimate {
  readonly pendingBytes: number;
  readonly expectedDowntimeMs: number;
}

export interface SwitchoverCosts {
  /** Bytes of device state moved during the pause (QEMU: a few hundred KB). */
  readonly deviceStateBytes: number;
  /** Round trips the verify/handover exchange needs. */
  readonly roundTrips: number;
}

export const DEFAULT_SWITCHOVER_COSTS: SwitchoverCosts = { deviceStateBytes: 0, roundTrips: 1 };

export function estimateDowntime(
  pendingPages: number,
  wireBytesPerPage: number,
  bandwidthBytesPerSec: number,
  rttMs: number,
  costs: SwitchoverCosts = DEFAULT_SWITCHOVER_COSTS,
): SwitchoverEstimate {
  const pendingBytes = pendingPages * wireBytesPerPage + costs.deviceStateBytes;
  const bw = Math.max(bandwidthBytesPerSec, 1);
  return { pendingBytes, expectedDowntimeMs: (pendingBytes / bw) * 1000 + costs.roundTrips * rttMs };
}

/** QEMU's rule (migration.c): switch when pending bytes fit in bandwidth × downtime limit. */
export function shouldSwitchover(est: SwitchoverEstimate, downtimeLimitMs: number): boolean {
  return est.expectedDowntimeMs <= downtimeLimitMs;
}
