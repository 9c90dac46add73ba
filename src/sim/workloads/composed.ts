import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { PageSet, type ReadonlyPageSet } from '../../core/pageset.ts';
import type { Geometry } from '../../core/types.ts';
import type { Workload } from '../workload.ts';
import type { WriteSource } from './patterns.ts';

/** A workload that is the union of independent write patterns over a fixed layout. */
export class ComposedWorkload implements Workload {
  constructor(
    readonly name: string,
    readonly geometry: Geometry,
    private readonly nonZero: ReadonlyPageSet,
    private readonly sources: readonly WriteSource[],
    private readonly description: string,
  ) {}

  initialNonZero(): ReadonlyPageSet {
    // A copy: callers may cast it back to PageSet and mutate it.
    return new PageSet(this.nonZero.size, this.nonZero.words().slice());
  }

  writes(fromMs: number, toMs: number, into: PageSet): void {
    checkWritesArgs(this.name, this.geometry, fromMs, toMs, into);
    if (!(toMs > fromMs)) return;
    for (const s of this.sources) s(fromMs, toMs, into);
  }

  describe(): string {
    return this.description;
  }
}

export function checkWritesArgs(name: string, g: Geometry, fromMs: number, toMs: number, into: PageSet): void {
  if (!Number.isFinite(fromMs) || !Number.isFinite(toMs)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `workload ${name}: writes() needs finite times, got [${fromMs}, ${toMs})`);
  }
  if (into.size !== g.pageCount) {
    throw new PresyncError(ErrorCodes.GEOMETRY, `workload ${name}: page set has ${into.size} pages, the guest ${g.pageCount}`);
  }
}
