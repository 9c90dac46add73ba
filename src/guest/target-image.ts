import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, readFileSync, readSync, renameSync, writeFileSync, writeSync, writevSync, constants as fsc } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
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
}

export function metaPath(imagePath: string): string {
  return `${imagePath}.presync`;
}

function readMeta(path: string): ImageMeta | null {
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
  /** Reuse or overwrite an existing file that does not belong to this image. */
  readonly force?: boolean;
  /**
   * Make every page zero (without a resume the source assumes an empty image).
   * Done in place, only where a page is not zero already: the file may be mapped.
   */
  readonly zeroFill?: boolean;
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

  private constructor(readonly path: string, readonly geometry: Geometry, readonly imageId: string, fd: number, state: ImageMeta['state']) {
    this.fd = fd;
    this.metaState = state;
    this.digests = new BigUint64Array(geometry.pageCount);
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
    const img = new TargetImage(path, geometry, imageId, fd, 'syncing');
    img.writeMeta('syncing');
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
    const meta: ImageMeta = { format: 'presync-image/1', imageId: this.imageId, pageSize: this.geometry.pageSize, pageCount: this.geometry.pageCount, state };
    const tmp = `${metaPath(this.path)}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify(meta) + '\n');
      renameSync(tmp, metaPath(this.path));
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
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}
