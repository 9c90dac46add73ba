import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The optional native page hasher (native/pagehash.c, built by `npm ci`
 * through node-gyp). Same XXH64 as the WebAssembly path, hashed a batch of
 * pages per call. When the build is missing (no compiler) presync falls back
 * to WebAssembly; PRESYNC_NO_NATIVE=1 forces the fallback.
 */
export interface NativePageHash {
  hashPages(src: Uint8Array, pageSize: number, out: BigUint64Array, outOffset: number): number;
  /** `threads` > 1 splits the pages over that many threads (builds with it; older builds ignore it). */
  hashCompare(src: Uint8Array, pageSize: number, digests: BigUint64Array, firstPage: number, all: boolean, dirty: Uint32Array, dirtyOffset: number, threads?: number): number;
  /** hashCompare on a libuv worker thread; resolves to the new dirtyOffset. The arrays must not be touched meanwhile. */
  hashCompareAsync?(src: Uint8Array, pageSize: number, digests: BigUint64Array, firstPage: number, all: boolean, dirty: Uint32Array, dirtyOffset: number): Promise<number>;
  /** Data (not hole) extents of [offset, offset+length) of a file, relative to offset, flat [start, end, ...]. */
  dataExtents?(fd: number, offset: number, length: number): number[];
  /** Copies src into dst from 0; a read past the end of a shrunk mapping throws (code PRESYNC_ERR_IMAGE_SIZE) instead of killing the process. */
  copy?(src: Uint8Array, dst: Uint8Array): void;
  /**
   * Digests of the pages of `src` (a view of a shared file mapping on a 4 KiB boundary) into digests[firstPage..],
   * reading only pages in the page cache (mincore); the others are holes and get the zero-page digest untouched.
   * Returns the resident page count. Absent in builds before it existed.
   */
  hashResident?(src: Uint8Array, pageSize: number, digests: BigUint64Array, firstPage: number, threads?: number): number;
  /** Read-only shared mapping of [offset, offset+length) of an open file; absent in builds before it existed. */
  mapFile?(fd: number, offset: number, length: number): ArrayBuffer;
  /** PAGES records for `count` pages laid out in `dst` from `dstOffset`; returns the end offset. Little-endian builds only. */
  packPages?(src: Uint8Array, pageSize: number, srcPos: Uint32Array, indices: Uint32Array, count: number, dst: Uint8Array, dstOffset: number, digests: BigUint64Array, crc?: Uint32Array): number;
}

function load(): NativePageHash | null {
  if (process.env.PRESYNC_NO_NATIVE === '1') return null;
  const path = fileURLToPath(new URL('../../native/build/Release/pagehash.node', import.meta.url));
  if (!existsSync(path)) return null;
  try {
    return createRequire(import.meta.url)(path) as NativePageHash;
  } catch {
    return null;
  }
}

export const nativePageHash: NativePageHash | null = load();
