import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import type { Geometry } from '../../core/types.ts';
import type { WorkloadParams } from '../workload.ts';

/** One numeric knob of a generator, with its default and allowed range. */
export interface OptionSpec {
  readonly default: number;
  readonly min: number;
  readonly max: number;
  readonly integer?: boolean;
  readonly doc: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

export type ResolvedOptions<S extends OptionSpecs> = { readonly [K in keyof S]: number };

/**
 * Merges the caller's options over the defaults. Unknown names are rejected
 * rather than ignored: a typo in a sweep would otherwise silently run the
 * default workload.
 */
export function resolveOptions<S extends OptionSpecs>(workload: string, specs: S, given: Readonly<Record<string, number>> | undefined): ResolvedOptions<S> {
  const out: Record<string, number> = {};
  for (const [key, spec] of Object.entries(specs)) out[key] = spec.default;
  for (const [key, value] of Object.entries(given ?? {})) {
    const spec = specs[key];
    if (!spec) {
      const known = Object.keys(specs).join(', ') || '(none)';
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `workload ${workload} has no option "${key}"; known options: ${known}`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value < spec.min || value > spec.max || (spec.integer && !Number.isInteger(value))) {
      const kind = spec.integer ? 'an integer' : 'a number';
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `workload ${workload}: option ${key} must be ${kind} in [${spec.min}, ${spec.max}], got ${String(value)}`);
    }
    out[key] = value;
  }
  return out as ResolvedOptions<S>;
}

/** Checks the geometry and seed every generator needs. */
export function checkParams(workload: string, p: WorkloadParams): Geometry {
  const g = p.geometry;
  if (!g || !Number.isInteger(g.pageCount) || g.pageCount < 1 || g.pageCount > 2 ** 31) {
    throw new PresyncError(ErrorCodes.GEOMETRY, `workload ${workload}: pageCount must be an integer in [1, 2^31], got ${String(g?.pageCount)}`);
  }
  if (!Number.isInteger(g.pageSize) || g.pageSize < 1) {
    throw new PresyncError(ErrorCodes.GEOMETRY, `workload ${workload}: pageSize must be a positive integer, got ${String(g.pageSize)}`);
  }
  if (!Number.isSafeInteger(p.seed)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `workload ${workload}: seed must be a safe integer, got ${String(p.seed)}`);
  }
  return g;
}
