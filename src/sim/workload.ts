import type { PageSet, ReadonlyPageSet } from '../core/pageset.ts';
import type { Geometry } from '../core/types.ts';

/**
 * A simulated guest's write behaviour.
 *
 * `writes` must be a pure function of the workload's parameters (seed
 * included) and the interval: the same interval asked twice, or asked as two
 * halves, yields the same pages. That keeps every policy facing the same
 * writes before launch, whatever step sizes the simulator takes after it.
 */
export interface Workload {
  readonly name: string;
  readonly geometry: Geometry;
  /** Pages that hold non-zero data when the migration starts. */
  initialNonZero(): ReadonlyPageSet;
  /** Adds to `into` every page written in [fromMs, toMs). */
  writes(fromMs: number, toMs: number, into: PageSet): void;
  /** Human description of the write pattern, for reports. */
  describe(): string;
}

export interface WorkloadParams {
  readonly geometry: Geometry;
  readonly seed: number;
  /** Optional knobs specific to a generator (rates, region sizes, …). */
  readonly options?: Readonly<Record<string, number>>;
}

export type WorkloadFactory = (p: WorkloadParams) => Workload;
