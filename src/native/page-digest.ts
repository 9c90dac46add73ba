import xxhash from 'xxhash-wasm';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { nativePageHash } from './pagehash.ts';

/**
 * Per-page content digests: XXH64 with seed 0. 64 bits because "this page is
 * unchanged" decisions are made on digests alone; with 32 bits a 256 MiB
 * guest scanned every 100 ms would see a false "unchanged" within hours.
 * Both ends must agree on the function, so it is part of the wire protocol.
 */

type H64Raw = (input: Uint8Array, seed?: bigint) => bigint;

let h64: H64Raw | undefined;
let initPromise: Promise<void> | undefined;

/** The digest of an all-zero page of DEFAULT_PAGE_SIZE bytes; valid after initDigest(). */
export let ZERO_PAGE_DIGEST = 0n;
export const DEFAULT_PAGE_SIZE = 4096;

const zeroDigestBySize = new Map<number, bigint>();

/** Loads the WebAssembly hasher. Idempotent; await it once before any digest call. */
export function initDigest(): Promise<void> {
  initPromise ??= xxhash().then((api) => {
    h64 = api.h64Raw;
    ZERO_PAGE_DIGEST = zeroPageDigest(DEFAULT_PAGE_SIZE);
  });
  return initPromise;
}

export function isDigestReady(): boolean {
  return h64 !== undefined;
}

function hasher(): H64Raw {
  if (h64 === undefined) {
    throw new PresyncError(ErrorCodes.INTERNAL, 'page digests used before initDigest() resolved; await initDigest() at startup');
  }
  return h64;
}

/** XXH64 (seed 0) of one page's raw bytes. */
export function digestPage(buf: Uint8Array): bigint {
  if (nativePageHash && buf.length > 0) {
    nativePageHash.hashPages(buf, buf.length, oneDigest, 0);
    return oneDigest[0];
  }
  return hasher()(buf);
}

const oneDigest = new BigUint64Array(1);

/** The WebAssembly XXH64 alone: the reference the native hasher is tested against. */
export function digestPageWasm(buf: Uint8Array): bigint {
  return hasher()(buf);
}

/** Digest of an all-zero page of `pageSize` bytes (cached per size). */
export function zeroPageDigest(pageSize: number): bigint {
  let d = zeroDigestBySize.get(pageSize);
  if (d === undefined) {
    d = hasher()(new Uint8Array(pageSize));
    zeroDigestBySize.set(pageSize, d);
  }
  return d;
}

/**
 * Digests pages [first, first+count) of `image` into out[outOffset..]. Pages are
 * hashed through subarray views, so the image is never copied in JS.
 */
export function digestPages(
  image: Uint8Array,
  pageSize: number,
  first: number,
  count: number,
  out: BigUint64Array,
  outOffset = 0,
): void {
  if (!Number.isInteger(pageSize) || pageSize <= 0) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `pageSize must be a positive integer, got ${pageSize}`);
  }
  if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count < 0) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `page range must be non-negative integers, got first=${first} count=${count}`);
  }
  if ((first + count) * pageSize > image.length) {
    throw new PresyncError(ErrorCodes.PAGE_RANGE, `pages ${first}..${first + count - 1} lie beyond the ${image.length}-byte image`);
  }
  if (outOffset < 0 || outOffset + count > out.length) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `output holds ${out.length} digests; cannot write ${count} at ${outOffset}`);
  }
  if (nativePageHash && count > 0) {
    nativePageHash.hashPages(image.subarray(first * pageSize, (first + count) * pageSize), pageSize, out, outOffset);
    return;
  }
  const h = hasher();
  let off = first * pageSize;
  for (let i = 0; i < count; i++, off += pageSize) {
    out[outOffset + i] = h(image.subarray(off, off + pageSize));
  }
}

const ZERO_BLOCK = new Uint8Array(64 * 1024);

/**
 * True when every byte of `buf` is zero. Compares against a zero block with the
 * native Buffer.equals (memcmp, word-at-a-time in libc) rather than a JS loop:
 * non-zero pages exit on the first differing word, zero pages run at memory speed.
 */
export function isZeroPage(buf: Uint8Array): boolean {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let off = 0; off < b.length; off += ZERO_BLOCK.length) {
    const n = Math.min(ZERO_BLOCK.length, b.length - off);
    if (!b.subarray(off, off + n).equals(ZERO_BLOCK.subarray(0, n))) return false;
  }
  return true;
}
