import { closeSync, fstatSync, openSync, readSync, constants as fsc } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';

/**
 * Read-only view of a source RAM image (any file: a QEMU memory-backend-file
 * in /dev/shm, an application's state file). The source never writes it:
 * whatever happens to a migration, the guest's memory stays untouched.
 */
export class RamImageReader {
  readonly geometry: Geometry;
  private fd: number;

  private constructor(readonly path: string, fd: number, geometry: Geometry) {
    this.fd = fd;
    this.geometry = geometry;
  }

  static open(path: string, pageSize = 4096): RamImageReader {
    if (!Number.isInteger(pageSize) || pageSize < 512 || (pageSize & (pageSize - 1)) !== 0) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `page size must be a power of two ≥ 512, got ${pageSize}`);
    }
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

  /** Reads pages [first, first+count) into `into` (at offset 0). */
  readPages(first: number, count: number, into: Uint8Array): Uint8Array {
    const { pageSize, pageCount } = this.geometry;
    if (first < 0 || count < 0 || first + count > pageCount) {
      throw new PresyncError(ErrorCodes.PAGE_RANGE, `pages ${first}+${count} outside [0, ${pageCount})`);
    }
    const len = count * pageSize;
    if (into.length < len) throw new RangeError(`buffer of ${into.length} bytes too small for ${count} pages`);
    let done = 0;
    while (done < len) {
      const n = readSync(this.fd, into, done, len - done, first * pageSize + done);
      if (n === 0) throw new PresyncError(ErrorCodes.IMAGE, `${this.path} shrank while being read`);
      done += n;
    }
    return into.subarray(0, len);
  }

  readPage(page: number, into: Uint8Array): Uint8Array {
    return this.readPages(page, 1, into);
  }

  close(): void {
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}
