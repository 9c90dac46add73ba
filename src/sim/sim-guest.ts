import { PageSet, type ReadonlyPageSet } from '../core/pageset.ts';

/**
 * A simulated guest and its target image, as per-page content versions.
 * A write bumps a page's version; a page arrives at the target with the version
 * it had when it was queued. Source and target are equal bit for bit exactly
 * when every version matches, which is what the simulator verifies at handover.
 */
export class SimGuest {
  readonly source: Uint32Array;
  readonly target: Uint32Array;
  /** Pages with non-zero content on the source. */
  readonly nonZero: PageSet;

  constructor(readonly pageCount: number, initialNonZero: ReadonlyPageSet) {
    this.source = new Uint32Array(pageCount);
    this.target = new Uint32Array(pageCount);
    this.nonZero = PageSet.copyOf(initialNonZero);
    // Version 0 is the all-zero page both sides start with.
    this.nonZero.forEach((p) => {
      this.source[p] = 1;
    });
  }

  write(pages: ReadonlyPageSet): void {
    const src = this.source;
    pages.forEach((p) => {
      src[p]++;
    });
    this.nonZero.unionWith(pages);
  }

  isZero(page: number): boolean {
    return !this.nonZero.has(page);
  }

  /** Pages whose target copy differs from the source. */
  differing(): PageSet {
    const out = new PageSet(this.pageCount);
    for (let p = 0; p < this.pageCount; p++) if (this.source[p] !== this.target[p]) out.add(p);
    return out;
  }

  identical(): boolean {
    const a = this.source;
    const b = this.target;
    for (let p = 0; p < a.length; p++) if (a[p] !== b[p]) return false;
    return true;
  }
}
