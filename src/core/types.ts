import type { ReadonlyPageSet } from './pageset.ts';

/** Shape of a guest's memory. */
export interface Geometry {
  readonly pageSize: number;
  readonly pageCount: number;
}

/** What the shell knows about the network at the start of an epoch. */
export interface NetObservation {
  /** Estimated bottleneck bandwidth available to us, bytes/s. */
  readonly bandwidthBytesPerSec: number;
  /** Round-trip time, ms (smoothed). */
  readonly rttMs: number;
  /**
   * RTT samples the estimate rests on; 0 means rttMs is only a prior. A
   * simulator's link knows its RTT and leaves this out.
   */
  readonly rttSamples?: number;
  /** Bytes handed to the transport and not yet acknowledged by the target. */
  readonly bytesInFlight: number;
  /** Bytes handed to the transport during the previous epoch. */
  readonly offeredBytes: number;
  /** Bytes the target acknowledged during the previous epoch. */
  readonly deliveredBytes: number;
}

/**
 * The observation a policy receives once per epoch. Everything a decision may
 * depend on is in here: policies read no clock and do no I/O.
 */
export interface EpochObservation {
  readonly epoch: number;
  /** Time since the migration started (virtual in the simulator, real in the engine), ms. */
  readonly timeMs: number;
  /** Length of the interval this observation covers, ms. */
  readonly epochMs: number;
  readonly phase: 'presync' | 'launched';
  readonly geometry: Geometry;
  /** Pages written since the previous observation. */
  readonly dirty: ReadonlyPageSet;
  /** Pages whose current content the target does not hold and that are not on their way to it. */
  readonly stale: ReadonlyPageSet;
  readonly net: NetObservation;
  /** Guest slowdown attributed to us over the previous epoch, 0..1 (modelled or measured). */
  readonly guestSlowdown: number;
  /** When the launch command came, if it has. */
  readonly launchedAtMs?: number;
  /**
   * After launch: how long the guest typically runs on once the shell starts
   * pausing it, ms (QEMU sets up its own stream first). Pages sent just ahead
   * of the pause that cross within it cost no launch→running time. 0 or absent: none.
   */
  readonly pauseLagMs?: number;
  /**
   * How many entries of the previous decision's `send` list the shell got
   * through (sent, or skipped because they were no longer stale); the rest did
   * not fit the budget or the link.
   */
  readonly consumed: number;
  /** Average wire bytes per page sent recently (header + payload after elision and compression). */
  readonly wireBytesPerPage: number;
  /** The operator's downtime limit, ms, when changed at run time; it overrides the policy's own. */
  readonly downtimeLimitMs?: number;
}

/** What a policy returns. The shell sends a prefix of `send` that fits `budgetBytes`. */
export interface EpochDecision {
  /** Pages to send, most important first. Every page must be in `stale`. */
  readonly send: Uint32Array;
  /** Upper bound on bytes to put on the wire this epoch. */
  readonly budgetBytes: number;
  /**
   * After launch: pause the guest and copy what is left. With a non-empty
   * `send`, those pages go first while the guest still runs, and the shell
   * pauses once they are on the wire (or nearly: a shell whose pause takes
   * effect late, like QEMU's, may start it earlier by that lag).
   */
  readonly switchover: boolean;
  /**
   * After launch, instead of a scan of the whole guest: wait `afterMs`, then
   * look only at `pages`; the next observation's `dirty` holds those of them
   * written since. Sends of this decision are not waited for.
   */
  readonly probe?: { readonly pages: Uint32Array; readonly afterMs: number };
  /**
   * With a probe: start pausing the guest now, and keep probing and sending
   * until the switchover. Worth it only when the shell's pause takes effect
   * late (obs.pauseLagMs): the guest then stops while the probes go on, and
   * the switchover does not wait for the lag again.
   */
  readonly startPause?: boolean;
  /** With switchover: false when the policy gave up converging (expected downtime above its limit). */
  readonly converged?: boolean;
  /** With switchover and converged=false: the policy asks the shell to roll back rather than pause long. */
  readonly abort?: boolean;
  /** Diagnostic state for the time series (rate-control window, predicted-hot pages, …). */
  readonly diag?: Readonly<Record<string, number>>;
}

export interface MigrationPolicy {
  readonly name: string;
  decide(obs: EpochObservation): EpochDecision;
}

/** Options shared by every policy factory. */
export interface PolicyContext {
  readonly geometry: Geometry;
  /** Seed for any randomness the policy uses. */
  readonly seed: number;
  /**
   * Only the oracle may use this: the pages written in [fromMs, toMs) in the future,
   * and the launch moment. Real shells do not provide it.
   */
  readonly future?: FutureKnowledge;
}

export interface FutureKnowledge {
  readonly launchAtMs: number;
  writes(fromMs: number, toMs: number): ReadonlyPageSet;
}
