import { existsSync } from 'node:fs';
import { ImageLayout, type SegmentFile, type SegmentSpec } from '../core/image-layout.ts';
import type { Geometry } from '../core/types.ts';
import { readMeta, TargetImage, type ImageMeta, type OpenTargetOptions } from './target-image.ts';

/** What a target session writes and verifies: one file (TargetImage) or several in one page space (SegmentedTargetImage). */
export type TargetPages = Pick<
  TargetImage,
  'path' | 'geometry' | 'digests' | 'pagesWritten' | 'state' | 'writePages' | 'recheck' | 'recheckAll' | 'markValid' | 'markInvalid' | 'close'
>;

type PageWrite = Parameters<TargetImage['writePages']>[0][number];

/**
 * The target's copy of an image made of several files (e.g. the target
 * QEMU's memory backends, one per NUMA node), one TargetImage per file, each
 * with its own sidecar (state, lineage, segment id) and its slice of one
 * digest table. Pages are addressed in the source's page space and routed
 * to (file, page) here; every write stays inside its own file.
 */
export class SegmentedTargetImage implements TargetPages {
  readonly geometry: Geometry;
  readonly digests: BigUint64Array;
  private readonly layout: ImageLayout;

  private constructor(private readonly files: readonly TargetImage[], layout: ImageLayout, digests: BigUint64Array, pageSize: number) {
    this.layout = layout;
    this.digests = digests;
    this.geometry = { pageSize, pageCount: layout.pageCount };
  }

  /**
   * Opens (creates, sizes) every file, in the source's order; all or none: a
   * failure closes those already open. Each file is checked and prepared as
   * a one-file image is (foreign or handed-over files refused without force).
   */
  static open(files: ReadonlyArray<SegmentFile & SegmentSpec>, pageSize: number, imageId: string, opts: Omit<OpenTargetOptions, 'segment' | 'digests'> = {}): SegmentedTargetImage {
    const layout = new ImageLayout(files);
    const digests = new BigUint64Array(layout.pageCount);
    const open: TargetImage[] = [];
    try {
      files.forEach((f, i) => {
        const first = layout.firstPage(i);
        open.push(TargetImage.open(f.path, { pageSize, pageCount: f.pageCount }, imageId, { ...opts, segment: f.id, digests: digests.subarray(first, first + f.pageCount) }));
      });
    } catch (e) {
      for (const t of open) t.close();
      throw e;
    }
    return new SegmentedTargetImage(open, layout, digests, pageSize);
  }

  get path(): string {
    return this.files[0].path;
  }

  get pagesWritten(): number {
    let n = 0;
    for (const f of this.files) n += f.pagesWritten;
    return n;
  }

  get state(): ImageMeta['state'] {
    return this.files[0].state;
  }

  /** Writes each page into its file: runs of pages of one file go together, in the given order. */
  writePages(pages: readonly PageWrite[]): void {
    let i = 0;
    while (i < pages.length) {
      const { segment } = this.layout.locate(pages[i].index);
      const base = this.layout.firstPage(segment);
      const end = this.layout.firstPage(segment + 1);
      const run: PageWrite[] = [];
      for (; i < pages.length && pages[i].index >= base && pages[i].index < end; i++) run.push({ ...pages[i], index: pages[i].index - base });
      this.files[segment].writePages(run);
    }
  }

  recheck(first: number, count: number): number[] {
    const out: number[] = [];
    const end = Math.min(this.geometry.pageCount, first + Math.max(0, count));
    if (end <= first) return out;
    for (const p of this.layout.pieces(first, end - first)) {
      const base = this.layout.firstPage(p.segment);
      for (const q of this.files[p.segment].recheck(p.offset, p.count)) out.push(q + base);
    }
    return out;
  }

  async recheckAll(): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < this.files.length; i++) {
      const base = this.layout.firstPage(i);
      for (const q of await this.files[i].recheckAll()) out.push(q + base);
    }
    return out;
  }

  markValid(): void {
    for (const f of this.files) f.markValid();
  }

  markInvalid(): void {
    for (const f of this.files) f.markInvalid();
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/**
 * What the target holds in the files of a layout, from their sidecars: one
 * image only when every file has a sidecar of the same image and lineage
 * (then its geometry is their sum, and it is `valid` if any file is);
 * otherwise null (nothing to resume).
 */
export function heldLayoutMeta(files: readonly SegmentFile[]): ImageMeta | null {
  const metas = files.map((f) => (existsSync(f.path) ? readMeta(f.path) : null));
  const first = metas[0];
  if (!first) return null;
  let pageCount = 0;
  for (let i = 0; i < metas.length; i++) {
    const m = metas[i];
    if (!m || m.imageId !== first.imageId || m.lineageId !== first.lineageId || m.pageSize !== first.pageSize || m.segment !== files[i].id) return null;
    pageCount += m.pageCount;
  }
  const state = metas.some((m) => m!.state === 'valid') ? 'valid' : metas.some((m) => m!.state === 'invalid') ? 'invalid' : 'syncing';
  return { ...first, pageCount, state };
}
