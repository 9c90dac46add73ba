import { ErrorCodes, PresyncError } from './errors.ts';

/**
 * The layout of an image made of several files (segments), e.g. a QEMU VM
 * with one memory-backend-file per NUMA node: the engine sees one
 * page-addressed space, the segments one after another in their given order.
 * A one-file image is the one-segment case. Pure: no file is touched here.
 */

/** A segment as the wire carries it: its id (a QEMU RAM block is matched by its backend id) and its size in pages. */
export interface SegmentSpec {
  readonly id: string;
  readonly pageCount: number;
}

/** At most this many segments (the HELLO carrying them must stay below the 4 KiB handshake frame limit). */
export const MAX_SEGMENTS = 32;
/** A segment id: a QEMU object id (letter first, then letters, digits, '-', '.', '_'), at most 64 bytes. */
export const SEGMENT_ID_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

/** Why `segments` is not a valid layout, or undefined. */
export function layoutProblem(segments: readonly SegmentSpec[]): string | undefined {
  if (segments.length === 0 || segments.length > MAX_SEGMENTS) return `a layout has 1 to ${MAX_SEGMENTS} segments, got ${segments.length}`;
  const seen = new Set<string>();
  for (const s of segments) {
    if (!SEGMENT_ID_RE.test(s.id)) return `segment id ${JSON.stringify(s.id.slice(0, 80))} is not a letter followed by up to 63 letters, digits, '-', '.' or '_'`;
    if (seen.has(s.id)) return `segment id "${s.id}" appears twice`;
    seen.add(s.id);
    if (!Number.isSafeInteger(s.pageCount) || s.pageCount <= 0) return `segment "${s.id}" has ${s.pageCount} pages; it needs at least one`;
  }
  return undefined;
}

/** Where each segment starts in the image's page space. */
export class ImageLayout {
  /** firstPage[i]: the image page where segment i starts; firstPage[n] = pageCount. */
  private readonly starts: number[];

  constructor(readonly segments: readonly SegmentSpec[]) {
    const why = layoutProblem(segments);
    if (why) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, why);
    this.starts = [0];
    for (const s of segments) this.starts.push(this.starts[this.starts.length - 1] + s.pageCount);
  }

  get pageCount(): number {
    return this.starts[this.starts.length - 1];
  }

  /** The image page where segment `i` starts. */
  firstPage(i: number): number {
    return this.starts[i];
  }

  /** The segment holding image page `page` (which must be inside the image). */
  segmentOf(page: number): number {
    if (!Number.isInteger(page) || page < 0 || page >= this.pageCount) {
      throw new PresyncError(ErrorCodes.PAGE_RANGE, `page ${page} outside the image's ${this.pageCount} pages`);
    }
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= page) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Image page `page` as (segment, page within that segment's file). */
  locate(page: number): { segment: number; offset: number } {
    const segment = this.segmentOf(page);
    return { segment, offset: page - this.starts[segment] };
  }

  /** The first image page after the segment holding `page`. */
  segmentEnd(page: number): number {
    return this.starts[this.segmentOf(page) + 1];
  }

  /** Pages [first, first+count) cut at segment boundaries: (segment, offset within it, count) per piece, in order. */
  pieces(first: number, count: number): Array<{ segment: number; offset: number; first: number; count: number }> {
    const out: Array<{ segment: number; offset: number; first: number; count: number }> = [];
    if (count <= 0) return out;
    if (first < 0 || first + count > this.pageCount) throw new PresyncError(ErrorCodes.PAGE_RANGE, `pages ${first}+${count} outside [0, ${this.pageCount})`);
    let p = first;
    const end = first + count;
    while (p < end) {
      const segment = this.segmentOf(p);
      const n = Math.min(end, this.starts[segment + 1]) - p;
      out.push({ segment, offset: p - this.starts[segment], first: p, count: n });
      p += n;
    }
    return out;
  }
}

/** The target's files for a layout: the source's order, each id mapped to the target's file of that id. */
export interface SegmentFile {
  readonly id: string;
  readonly path: string;
  /** The file's size the target expects (e.g. its QEMU backend's size); a source layout of another size is refused. */
  readonly bytes?: number;
}

/**
 * Matches the source's layout with the target's files: the same ids, each
 * of the size the target expects. Returns the target's files in the
 * source's order; throws PRESYNC_ERR_GEOMETRY naming the difference.
 */
export function matchLayout(source: readonly SegmentSpec[], pageSize: number, target: readonly SegmentFile[]): Array<SegmentFile & SegmentSpec> {
  const ids = (l: readonly { id: string }[]): string => l.map((s) => s.id).join(', ');
  const byId = new Map(target.map((t) => [t.id, t]));
  const missing = source.filter((s) => !byId.has(s.id));
  const extra = target.filter((t) => !source.some((s) => s.id === t.id));
  if (missing.length > 0 || extra.length > 0) {
    throw new PresyncError(
      ErrorCodes.GEOMETRY,
      `the source's RAM is ${source.length} segment${source.length === 1 ? '' : 's'} (${ids(source)}), this target has ${target.length} (${ids(target)}); ` +
        `give the target one RAM file per source segment with the same ids`,
    );
  }
  return source.map((s) => {
    const t = byId.get(s.id)!;
    if (t.bytes !== undefined && t.bytes !== s.pageCount * pageSize) {
      throw new PresyncError(ErrorCodes.GEOMETRY, `segment "${s.id}" is ${s.pageCount * pageSize} B on the source, ${t.bytes} B on the target (${t.path}); give both the same size`);
    }
    return { ...t, pageCount: s.pageCount };
  });
}
