import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, readFileSync, readSync, rmSync, writeSync, writevSync, constants as fsc } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import { writeFileAtomic } from './atomic-file.ts';
import { nativePageHash } from '../native/pagehash.ts';
import { digestPages, zeroPageDigest } from '../native/page-digest.ts';

/** Sidecar that says which migration an image belongs to and whether it may be used. */
export interface ImageMeta {
  readonly format: 'presync-image/1';
  readonly imageId: string;
  readonly pageSize: number;
  readonly pageCount: number;
  /** syncing: being filled; valid: verified and handed over; invalid: a failed migration's leftovers. */
  readonly state: 'syncing' | 'valid' | 'invalid';
  /** The source's migration lineage that filled it (absent in sidecars before lineages existed). */
  readonly lineageId?: string;
  /** Which file of an image of several this is (its id); absent for a one-file image. */
  readonly segment?: string;
}

/** Pages per pread when re-reading the file: 1 MiB at 4 KiB pages. */
const RECHECK_CHUNK_PAGES = 256;

export function metaPath(imagePath: string): string {
  return `${imagePath}.presync`;
}

export function readMeta(path: string): ImageMeta | null {
  const p = metaPath(path);
  if (!existsSync(p)) return null;
  try {
    const m = JSON.parse(readFileSync(p, 'utf8')) as Partial<ImageMeta>;
    if (m.format !== 'presync-image/1' || typeof m.imageId !== 'string' || !Number.isInteger(m.pageSize) || !Number.isInteger(m.pageCount)) return null;
    return m as ImageMeta;
  } catch {
    return null;
  }
}

export interface OpenTargetOptions {
  /** Reuse or overwrite an existing file that does not belong to this image, or one that was handed over. */
  readonly force?: boolean;
  /** The lineage of the migration writing it, recorded in the sidecar. */
  readonly lineageId?: string;
  /**
   * Make every page zero (without a resume the source assumes an empty image).
   * Done in place, only where a page is not zero already: the file may be mapped.
   */
  readonly zeroFill?: boolean;
  /** This file is the segment of that id of an image of several (recorded in the sidecar). */
  readonly segment?: string;
  /** Where to keep the page digests: this file's slice of the whole image's table (default: a table of its own). */
  readonly digests?: BigUint64Array;
}

/**
 * The target's copy of a guest's RAM. Pages are written in place (pwrite), so
 * the file may already be mapped by a target QEMU; it is never truncated once
 * it has the right size. The target only ever writes inside this one file, at
 * validated page offsets.
 */
export class TargetImage {
  readonly digests: BigUint64Array;
  private fd: number;
  private metaState: ImageMeta['state'];
  pagesWritten = 0;

  private constructor(
    readonly path: string,
    readonly geometry: Geometry,
    readonly imageId: string,
    fd: number,
    state: ImageMeta['state'],
    readonly lineageId?: string,
    private readonly segment?: string,
    digests?: BigUint64Array,
  ) {
    this.fd = fd;
    this.metaState = state;
    if (digests !== undefined && digests.length !== geometry.pageCount) throw new PresyncError(ErrorCodes.INTERNAL, `a digest table of ${digests.length} entries for ${geometry.pageCount} pages`);
    this.digests = digests ?? new BigUint64Array(geometry.pageCount);
  }

  static open(path: string, geometry: Geometry, imageId: string, opts: OpenTargetOptions = {}): TargetImage {
    const size = geometry.pageSize * geometry.pageCount;
    const meta = readMeta(path);
    const exists = existsSync(path);
    if (exists && !opts.force) {
      const ours = meta !== null && meta.imageId === imageId;
      if (!ours) {
        throw new PresyncError(
          ErrorCodes.IMAGE_EXISTS,
          `${path} exists and does not hold image "${imageId}"${meta ? ` (it holds "${meta.imageId}")` : ''}; pass --force to overwrite it`,
        );
      }
      if (meta.state === 'valid') {
        // Handed over: an application may run from this file now.
        throw new PresyncError(
          ErrorCodes.IMAGE_EXISTS,
          `${path} was handed over to an application (state valid) and is never written again; pass --force to overwrite it, or use another target image`,
        );
      }
      if (meta.pageSize !== geometry.pageSize || meta.pageCount !== geometry.pageCount) {
        throw new PresyncError(ErrorCodes.GEOMETRY, `${path} holds ${meta.pageCount} pages of ${meta.pageSize} B, the source has ${geometry.pageCount} of ${geometry.pageSize} B`);
      }
    }
    let fd: number;
    try {
      fd = openSync(path, fsc.O_RDWR | fsc.O_CREAT, 0o600);
    } catch (e) {
      throw new PresyncError(ErrorCodes.IMAGE, `cannot open target image ${path}: ${(e as Error).message}`, { cause: e });
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new PresyncError(ErrorCodes.IMAGE, `${path} is not a regular file`);
      // A file of the right size (perhaps mapped by the target QEMU) is kept as is.
      if (st.size !== size) ftruncateSync(fd, size);
    } catch (e) {
      closeSync(fd);
      if (e instanceof PresyncError) throw e;
      throw new PresyncError(ErrorCodes.IMAGE, `cannot size target image ${path}: ${(e as Error).message}`, { cause: e });
    }
    const img = new TargetImage(path, geometry, imageId, fd, 'syncing', opts.lineageId, opts.segment, opts.digests);
    try {
      img.writeMeta('syncing');
    } catch (e) {
      closeSync(fd);
      // A file this call created and cannot describe would be refused as a
      // stranger's (IMAGE_EXISTS) by the next attempt: it is removed, so a
      // retry meets the same full disk and the same PRESYNC_ERR_IMAGE.
      if (!exists) rmSync(path, { force: true });
      throw e;
    }
    // A file created just now is all holes: its pages are zero pages, nothing to read.
    if (exists) img.rescan();
    else img.digests.fill(zeroPageDigest(geometry.pageSize));
    if (opts.zeroFill) img.zeroFill();
    return img;
  }

  get state(): ImageMeta['state'] {
    return this.metaState;
  }

  /** Recomputes every page digest from the file: what the target really holds. */
  rescan(): void {
    const { pageSize, pageCount } = this.geometry;
    // Hashed in place through a read-only mapping when the native build has it:
    // pread of a fresh (sparse) image costs more than hashing its zero pages.
    const map = nativePageHash?.mapFile;
    // Only a fully allocated file is read through a mapping: on tmpfs (/dev/shm) a
    // read fault on a hole allocates a page, and with the filesystem full the
    // kernel answers with SIGBUS, which would kill the agent. pread of a hole
    // allocates nothing.
    const st = fstatSync(this.fd);
    const allocated = st.blocks * 512 >= pageSize * pageCount;
    if (map && allocated && process.env.PRESYNC_NO_MMAP !== '1') {
      const segPages = Math.max(1, Math.floor((1 << 30) / pageSize));
      const list = new Uint32Array(Math.min(segPages, pageCount));
      for (let first = 0; first < pageCount; first += segPages) {
        const n = Math.min(segPages, pageCount - first);
        let view: Uint8Array | undefined;
        try {
          view = new Uint8Array(map(this.fd, first * pageSize, n * pageSize));
        } catch {
          view = undefined;
        }
        if (!view) break;
        nativePageHash!.hashCompare(view, pageSize, this.digests, first, true, list, 0, 2);
        if (first + n >= pageCount) return;
      }
    }
    const chunk = 1024;
    const buf = Buffer.allocUnsafe(chunk * pageSize);
    for (let first = 0; first < pageCount; first += chunk) {
      const n = Math.min(chunk, pageCount - first);
      const len = n * pageSize;
      let done = 0;
      while (done < len) {
        const r = readSync(this.fd, buf, done, len - done, first * pageSize + done);
        if (r === 0) throw new PresyncError(ErrorCodes.IMAGE, `${this.path} is shorter than expected`);
        done += r;
      }
      digestPages(buf, pageSize, 0, n, this.digests, first);
    }
  }

  private recheckBuf: Buffer | undefined;
  private views: Map<number, Uint8Array> | undefined;

  /**
   * Re-reads pages [first, first+count) and compares them with the digests of
   * what was written there. Returns the pages whose bytes differ (something
   * else wrote the file); their digests now say what the file holds, so a
   * verify compares the source with the file, not with a memory. Hashed in
   * place through the mapping recheckAll() uses, which keeps that mapping
   * faulted in for the pause (holes are skipped: mincore), or with pread.
   */
  recheck(first: number, count: number): number[] {
    const { pageSize, pageCount } = this.geometry;
    const end = Math.min(pageCount, first + Math.max(0, count));
    if (end <= first) return [];
    const fresh = (this.recheckFresh ??= new BigUint64Array(RECHECK_CHUNK_PAGES));
    const out: number[] = [];
    for (let at = first; at < end; ) {
      let n = Math.min(RECHECK_CHUNK_PAGES, end - at);
      if (this.residentHashing()) {
        const v = this.mappedView(at, at + n);
        n = v.length / pageSize;
        nativePageHash!.hashResident!(v, pageSize, fresh, 0, 1);
      } else {
        const buf = (this.recheckBuf ??= Buffer.allocUnsafe(RECHECK_CHUNK_PAGES * pageSize));
        this.readExactly(buf, n * pageSize, at * pageSize);
        digestPages(buf, pageSize, 0, n, fresh, 0);
      }
      for (let i = 0; i < n; i++) {
        if (fresh[i] !== this.digests[at + i]) {
          this.digests[at + i] = fresh[i];
          out.push(at + i);
        }
      }
      at += n;
    }
    return out;
  }

  private recheckFresh: BigUint64Array | undefined;

  /** The native build can hash a mapped file skipping its holes (mincore), and the page size allows it. */
  private residentHashing(): boolean {
    return nativePageHash?.hashResident !== undefined && nativePageHash.mapFile !== undefined && this.geometry.pageSize % 4096 === 0 && process.env.PRESYNC_NO_MMAP !== '1';
  }

  /** Pages [from, to) through the kept mapping, cut at the end of their 1 GiB segment. */
  private mappedView(from: number, to: number): Uint8Array {
    const { pageSize, pageCount } = this.geometry;
    const segPages = Math.max(1, Math.floor((1 << 30) / pageSize));
    const seg = Math.floor(from / segPages);
    const views = (this.views ??= new Map());
    let v = views.get(seg);
    if (!v) {
      const n = Math.min(segPages, pageCount - seg * segPages);
      v = new Uint8Array(nativePageHash!.mapFile!(this.fd, seg * segPages * pageSize, n * pageSize));
      views.set(seg, v);
    }
    const end = Math.min(to, (seg + 1) * segPages);
    return v.subarray((from - seg * segPages) * pageSize, (end - seg * segPages) * pageSize);
  }

  private readExactly(buf: Buffer, len: number, pos: number): void {
    let done = 0;
    while (done < len) {
      let r: number;
      try {
        r = readSync(this.fd, buf, done, len - done, pos + done);
      } catch (e) {
        throw new PresyncError(ErrorCodes.IMAGE, `re-reading ${this.path} failed: ${(e as Error).message}`, { cause: e });
      }
      if (r === 0) throw new PresyncError(ErrorCodes.IMAGE, `${this.path} is shorter than the image: something else truncated it`);
      done += r;
    }
  }

  /**
   * Re-reads the whole file and compares every page with the digest of what
   * was written there, as recheck() does, but hashed on libuv threads (two
   * lanes) in place through a read-only mapping, with holes taken as zero
   * pages without reading them. Returns the pages that differ; their digests
   * now describe the file. A page written while this runs keeps the digest of
   * that write (its writer re-verifies anyway).
   */
  async recheckAll(): Promise<number[]> {
    const { pageSize, pageCount } = this.geometry;
    const st = fstatSync(this.fd);
    if (st.size < pageSize * pageCount) throw new PresyncError(ErrorCodes.IMAGE, `${this.path} is ${st.size} B, shorter than the image: something else truncated it`);
    const expected = this.digests.slice();
    const fresh = this.digests.slice();
    if (this.residentHashing()) {
      // One call per 1 GiB segment, two threads, holes skipped however fragmented
      // (SEEK_DATA/SEEK_HOLE costs ~10 us per extent, far too much at the pause).
      // It blocks the event loop for the few ms it takes: the source is waiting.
      for (let p = 0; p < pageCount; ) {
        const v = this.mappedView(p, pageCount);
        nativePageHash!.hashResident!(v, pageSize, fresh, p, 2);
        p += v.length / pageSize;
      }
    } else {
      const buf = Buffer.allocUnsafe(RECHECK_CHUNK_PAGES * 4 * pageSize);
      const chunk = RECHECK_CHUNK_PAGES * 4;
      const tmp = new BigUint64Array(chunk);
      for (let first = 0; first < pageCount; first += chunk) {
        const k = Math.min(chunk, pageCount - first);
        this.readExactly(buf, k * pageSize, first * pageSize);
        digestPages(buf, pageSize, 0, k, tmp, 0);
        fresh.set(tmp.subarray(0, k), first);
        await new Promise<void>((r) => setImmediate(r));
      }
    }
    const out: number[] = [];
    for (let q = 0; q < pageCount; q++) {
      // Rewritten meanwhile by this agent: that write's digest is the one to keep.
      if (fresh[q] === expected[q] || this.digests[q] !== expected[q]) continue;
      this.digests[q] = fresh[q];
      out.push(q);
    }
    return out;
  }

  private zeroFill(): void {
    const zd = zeroPageDigest(this.geometry.pageSize);
    const zero = new Uint8Array(this.geometry.pageSize);
    for (let p = 0; p < this.geometry.pageCount; p++) if (this.digests[p] !== zd) this.writePage(p, zero, zd);
    this.pagesWritten = 0;
  }

  /** Writes one verified page. `digest` is the page content's digest, already checked by the decoder. */
  writePage(page: number, data: Uint8Array, digest: bigint): void {
    const { pageSize, pageCount } = this.geometry;
    if (!Number.isInteger(page) || page < 0 || page >= pageCount) {
      throw new PresyncError(ErrorCodes.PAGE_RANGE, `page ${page} outside the image's ${pageCount} pages`);
    }
    if (data.length !== pageSize) throw new PresyncError(ErrorCodes.PROTOCOL, `page ${page} has ${data.length} bytes, ${pageSize} expected`);
    let done = 0;
    try {
      while (done < pageSize) done += writeSync(this.fd, data, done, pageSize - done, page * pageSize + done);
    } catch (e) {
      throw new PresyncError(ErrorCodes.IMAGE, `writing page ${page} of ${this.path} failed: ${(e as Error).message}`, { cause: e });
    }
    this.digests[page] = digest;
    this.pagesWritten++;
  }

  /**
   * Writes verified pages, one pwritev per run of consecutive indices: a
   * syscall per 4 KiB page would cap the target far below the network.
   */
  writePages(pages: ReadonlyArray<{ readonly index: number; readonly data: Uint8Array | null; readonly digest: bigint }>): void {
    const { pageSize, pageCount } = this.geometry;
    const zero = new Uint8Array(pageSize);
    let i = 0;
    while (i < pages.length) {
      let j = i + 1;
      while (j < pages.length && pages[j].index === pages[j - 1].index + 1 && j - i < 1024) j++;
      const first = pages[i].index;
      const last = pages[j - 1].index;
      if (!Number.isInteger(first) || first < 0 || last >= pageCount) {
        throw new PresyncError(ErrorCodes.PAGE_RANGE, `pages ${first}..${last} outside the image's ${pageCount} pages`);
      }
      const bufs: Uint8Array[] = [];
      for (let k = i; k < j; k++) {
        const d = pages[k].data ?? zero;
        if (d.length !== pageSize) throw new PresyncError(ErrorCodes.PROTOCOL, `page ${pages[k].index} has ${d.length} bytes, ${pageSize} expected`);
        bufs.push(d);
      }
      const len = (j - i) * pageSize;
      try {
        let done = writevSync(this.fd, bufs, first * pageSize);
        // Short writes are rare (disk full); finish page by page from where it stopped.
        while (done < len) {
          const k = Math.floor(done / pageSize);
          const off = done % pageSize;
          done += writeSync(this.fd, bufs[k], off, pageSize - off, first * pageSize + done);
        }
      } catch (e) {
        throw new PresyncError(ErrorCodes.IMAGE, `writing pages ${first}..${last} of ${this.path} failed: ${(e as Error).message}`, { cause: e });
      }
      for (let k = i; k < j; k++) this.digests[pages[k].index] = pages[k].digest;
      this.pagesWritten += j - i;
      i = j;
    }
  }

  private writeMeta(state: ImageMeta['state']): void {
    const meta: ImageMeta = {
      format: 'presync-image/1',
      imageId: this.imageId,
      pageSize: this.geometry.pageSize,
      pageCount: this.geometry.pageCount,
      state,
      ...(this.lineageId ? { lineageId: this.lineageId } : {}),
      ...(this.segment !== undefined ? { segment: this.segment } : {}),
    };
    try {
      writeFileAtomic(metaPath(this.path), JSON.stringify(meta) + '\n');
    } catch (e) {
      // A full or read-only disk is the image's problem, not presync's (ENOSPC must not surface as INTERNAL).
      throw new PresyncError(ErrorCodes.IMAGE, `cannot record the state of target image ${this.path} in ${metaPath(this.path)}: ${(e as Error).message}`, { cause: e });
    }
    this.metaState = state;
  }

  markValid(): void {
    this.writeMeta('valid');
  }

  markInvalid(): void {
    try {
      this.writeMeta('invalid');
    } catch {
      // The image is already unusable; failing to say so must not mask the original error.
    }
  }

  close(): void {
    this.views = undefined;
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}
