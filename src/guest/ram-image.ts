import { closeSync, fstatSync, openSync, readSync, constants as fsc } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import { nativePageHash } from '../native/pagehash.ts';
import type { SegmentSpec } from '../core/image-layout.ts';

/**
 * Bytes per mapping window: a power of two, so a chunk of a power-of-two
 * number of pages never straddles two windows, and below the 4 GiB limit
 * of one ArrayBuffer in Node 20.
 */
const WINDOW_BYTES = 1 << 30;

export function checkPageSize(pageSize: number): void {
  if (!Number.isInteger(pageSize) || pageSize < 512 || (pageSize & (pageSize - 1)) !== 0) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `page size must be a power of two ≥ 512, got ${pageSize}`);
  }
}

function sizeError(path: string, was: number, now: number): PresyncError {
  return new PresyncError(
    ErrorCodes.IMAGE_SIZE,
    `${path} ${now > was ? 'grew' : 'shrank'} from ${was} to ${now} bytes during the migration; the guest's memory must keep its size: migrate again once it is stable`,
  );
}

/**
 * What the engine reads a source image through: one file (RamImageReader) or
 * several in one page space (SegmentedImageReader).
 */
export interface SourceImage {
  /** The (first) file, for messages and the default image id. */
  readonly path: string;
  readonly geometry: Geometry;
  /** The files' ids and sizes when the image is several files; absent for one. */
  readonly segments?: readonly SegmentSpec[];
  view(first: number, count: number): Uint8Array | null;
  /** The first page after the file holding `page`: no view reaches past it. */
  segmentEnd(page: number): number;
  dataRuns(first: number, count: number): number[];
  checkSize(): void;
  allocatedBytes(): number;
  readPages(first: number, count: number, into: Uint8Array): Uint8Array;
  sizeErrorFrom(e: unknown): unknown;
  close(): void;
}

/**
 * Read-only view of a source RAM image (any file: a QEMU memory-backend-file
 * in /dev/shm, an application's state file). The source never writes it:
 * whatever happens to a migration, the guest's memory stays untouched.
 */
export class RamImageReader implements SourceImage {
  readonly geometry: Geometry;
  private fd: number;
  /** Mapped windows (lazily), or null once mapping proved impossible. */
  private windows: Array<Uint8Array | undefined> | null;

  private constructor(readonly path: string, fd: number, geometry: Geometry) {
    this.fd = fd;
    this.geometry = geometry;
    // PRESYNC_NO_MMAP=1: read with pread only (e.g. to compare, or on a file that may shrink).
    this.windows = nativePageHash?.mapFile && process.env.PRESYNC_NO_MMAP !== '1' ? [] : null;
  }

  /**
   * A zero-copy view of pages [first, first+count) of the live image, or null
   * when the image is not mapped or the range crosses a mapping window's boundary.
   * The bytes change under the caller as the guest writes: copy before
   * trusting a digest of them to stay true.
   */
  view(first: number, count: number): Uint8Array | null {
    if (this.windows === null || this.fd < 0) return null;
    const { pageSize, pageCount } = this.geometry;
    if (first < 0 || count <= 0 || first + count > pageCount) return null;
    const start = first * pageSize;
    const end = start + count * pageSize;
    const seg = Math.floor(start / WINDOW_BYTES);
    if (Math.floor((end - 1) / WINDOW_BYTES) !== seg) return null;
    let m = this.windows[seg];
    if (m === undefined) {
      const off = seg * WINDOW_BYTES;
      const len = Math.min(WINDOW_BYTES, pageCount * pageSize - off);
      try {
        m = new Uint8Array(nativePageHash!.mapFile!(this.fd, off, len));
      } catch {
        this.windows = null;
        return null;
      }
      this.windows[seg] = m;
    }
    const base = seg * WINDOW_BYTES;
    return m.subarray(start - base, end - base);
  }

  segmentEnd(_page: number): number {
    return this.geometry.pageCount;
  }

  static open(path: string, pageSize = 4096): RamImageReader {
    checkPageSize(pageSize);
    let fd: number;
    try {
      fd = openSync(path, fsc.O_RDONLY);
    } catch (e) {
      throw new PresyncError(ErrorCodes.IMAGE, `cannot open image ${path}: ${(e as Error).message}`, { cause: e });
    }
    const st = fstatSync(fd);
    if (!st.isFile()) {
      closeSync(fd);
      throw new PresyncError(ErrorCodes.IMAGE, `${path} is not a regular file`);
    }
    if (st.size === 0 || st.size % pageSize !== 0) {
      closeSync(fd);
      throw new PresyncError(ErrorCodes.IMAGE, `${path} is ${st.size} bytes, not a non-zero multiple of the ${pageSize}-byte page size`);
    }
    return new RamImageReader(path, fd, { pageSize, pageCount: st.size / pageSize });
  }

  /**
   * The runs of pages in [first, first+count) that hold data, as [start, end)
   * page pairs; the rest are holes of a sparse file (zero pages no one has
   * written). A page partly data counts as data. Without SEEK_DATA support
   * (or the native build) the whole range is data.
   */
  dataRuns(first: number, count: number): number[] {
    const ext = nativePageHash?.dataExtents;
    if (!ext || this.fd < 0) return [first, first + count];
    const { pageSize, pageCount } = this.geometry;
    // A fully allocated file has no holes: skip the page-cache walk SEEK_HOLE costs.
    if (fstatSync(this.fd).blocks * 512 >= pageSize * pageCount) return [first, first + count];
    let raw: number[];
    try {
      raw = ext(this.fd, first * pageSize, count * pageSize);
    } catch {
      return [first, first + count];
    }
    const out: number[] = [];
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const s = first + Math.floor(raw[i] / pageSize);
      const e = Math.min(first + count, first + Math.ceil(raw[i + 1] / pageSize));
      if (e <= s) continue;
      if (out.length > 0 && out[out.length - 1] >= s) out[out.length - 1] = Math.max(out[out.length - 1], e);
      else out.push(s, e);
    }
    return out;
  }

  /**
   * Throws PRESYNC_ERR_IMAGE_SIZE when the file no longer has the size the
   * migration started with: a grown image would silently lose its new pages
   * on the target, a shrunk one cannot be read past its end.
   */
  checkSize(): void {
    if (this.fd < 0) return;
    const { pageSize, pageCount } = this.geometry;
    const size = fstatSync(this.fd).size;
    if (size !== pageSize * pageCount) throw sizeError(this.path, pageSize * pageCount, size);
  }

  /** Bytes the file system holds for the image (less than its size when it is sparse). */
  allocatedBytes(): number {
    return this.fd < 0 ? 0 : fstatSync(this.fd).blocks * 512;
  }

  /** Reads pages [first, first+count) into `into` (at offset 0). */
  readPages(first: number, count: number, into: Uint8Array): Uint8Array {
    const { pageSize, pageCount } = this.geometry;
    if (first < 0 || count < 0 || first + count > pageCount) {
      throw new PresyncError(ErrorCodes.PAGE_RANGE, `pages ${first}+${count} outside [0, ${pageCount})`);
    }
    const len = count * pageSize;
    if (into.length < len) throw new RangeError(`buffer of ${into.length} bytes too small for ${count} pages`);
    const v = this.view(first, count);
    const copy = nativePageHash?.copy;
    if (v && copy) {
      // A copy from the mapping is several times faster than pread on tmpfs;
      // the native copy survives the image shrinking under it (a JS copy would die of SIGBUS).
      try {
        copy(v, into);
      } catch (e) {
        throw this.sizeErrorFrom(e);
      }
      return into.subarray(0, len);
    }
    let done = 0;
    while (done < len) {
      const n = readSync(this.fd, into, done, len - done, first * pageSize + done);
      if (n === 0) throw sizeError(this.path, pageSize * pageCount, fstatSync(this.fd).size);
      done += n;
    }
    return into.subarray(0, len);
  }

  /** The native code's "read past the end" as a PRESYNC_ERR_IMAGE_SIZE naming the sizes; anything else unchanged. */
  sizeErrorFrom(e: unknown): unknown {
    if ((e as { code?: unknown } | null)?.code !== ErrorCodes.IMAGE_SIZE) return e;
    try {
      this.checkSize();
    } catch (sized) {
      return sized;
    }
    return new PresyncError(ErrorCodes.IMAGE_SIZE, `${this.path} shrank while being read (and has grown back since)`);
  }

  readPage(page: number, into: Uint8Array): Uint8Array {
    return this.readPages(page, 1, into);
  }

  close(): void {
    // Mappings are released when their views are collected; drop ours now.
    if (this.windows) this.windows = [];
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}
