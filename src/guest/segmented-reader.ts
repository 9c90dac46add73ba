import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import { ImageLayout, type SegmentSpec } from '../core/image-layout.ts';
import { checkPageSize, RamImageReader, type SourceImage } from './ram-image.ts';

/** One file of a source image made of several: its id (a QEMU backend id) and path. */
export interface SourceSegment {
  readonly id: string;
  readonly path: string;
}

/**
 * A source image made of several files (e.g. one memory-backend-file per
 * NUMA node) read as one page space, the files one after another in the
 * given order. Each file is read by its own RamImageReader; this only maps
 * image pages to (file, page) and cuts ranges at file boundaries.
 */
export class SegmentedImageReader implements SourceImage {
  readonly geometry: Geometry;
  readonly segments: readonly SegmentSpec[];
  private readonly layout: ImageLayout;

  private constructor(private readonly files: readonly RamImageReader[], ids: readonly string[]) {
    this.segments = files.map((f, i) => ({ id: ids[i], pageCount: f.geometry.pageCount }));
    this.layout = new ImageLayout(this.segments);
    this.geometry = { pageSize: files[0].geometry.pageSize, pageCount: this.layout.pageCount };
  }

  /** Opens every file (all or none: a failure closes those already open). */
  static open(segments: readonly SourceSegment[], pageSize = 4096): SegmentedImageReader {
    checkPageSize(pageSize);
    if (segments.length < 2) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'a segmented image has at least two files; open one file with RamImageReader');
    const files: RamImageReader[] = [];
    try {
      for (const s of segments) files.push(RamImageReader.open(s.path, pageSize));
      return new SegmentedImageReader(files, segments.map((s) => s.id));
    } catch (e) {
      for (const f of files) f.close();
      throw e;
    }
  }

  get path(): string {
    return this.files[0].path;
  }

  segmentEnd(page: number): number {
    return this.layout.segmentEnd(page);
  }

  view(first: number, count: number): Uint8Array | null {
    if (first < 0 || count <= 0 || first + count > this.geometry.pageCount) return null;
    const { segment, offset } = this.layout.locate(first);
    if (first + count > this.layout.firstPage(segment + 1)) return null;
    return this.files[segment].view(offset, count);
  }

  dataRuns(first: number, count: number): number[] {
    const out: number[] = [];
    for (const p of this.layout.pieces(first, count)) {
      const base = this.layout.firstPage(p.segment);
      const runs = this.files[p.segment].dataRuns(p.offset, p.count);
      for (let i = 0; i + 1 < runs.length; i += 2) {
        const s = runs[i] + base;
        const e = runs[i + 1] + base;
        // Runs touching across a file boundary are one run, as in one file.
        if (out.length > 0 && out[out.length - 1] === s) out[out.length - 1] = e;
        else out.push(s, e);
      }
    }
    return out;
  }

  checkSize(): void {
    for (const f of this.files) f.checkSize();
  }

  allocatedBytes(): number {
    let n = 0;
    for (const f of this.files) n += f.allocatedBytes();
    return n;
  }

  readPages(first: number, count: number, into: Uint8Array): Uint8Array {
    const { pageSize, pageCount } = this.geometry;
    if (first < 0 || count < 0 || first + count > pageCount) {
      throw new PresyncError(ErrorCodes.PAGE_RANGE, `pages ${first}+${count} outside [0, ${pageCount})`);
    }
    const len = count * pageSize;
    if (into.length < len) throw new RangeError(`buffer of ${into.length} bytes too small for ${count} pages`);
    for (const p of this.layout.pieces(first, count)) {
      this.files[p.segment].readPages(p.offset, p.count, into.subarray((p.first - first) * pageSize));
    }
    return into.subarray(0, len);
  }

  sizeErrorFrom(e: unknown): unknown {
    if ((e as { code?: unknown } | null)?.code !== ErrorCodes.IMAGE_SIZE) return e;
    try {
      this.checkSize();
    } catch (sized) {
      return sized;
    }
    return new PresyncError(ErrorCodes.IMAGE_SIZE, `one of the files of ${this.segments.map((s) => s.id).join(', ')} shrank while being read (and has grown back since)`);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/** The source image: several files as one when `segments` lists two or more, else the one file at `path`. */
export function openSourceImage(path: string, segments: readonly SourceSegment[] | undefined, pageSize = 4096): SourceImage {
  if (segments !== undefined && segments.length >= 2) {
    if (segments[0].path !== path) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `the image path ${path} must be the first segment's (${segments[0].path})`);
    return SegmentedImageReader.open(segments, pageSize);
  }
  return RamImageReader.open(path, pageSize);
}
