import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { nativePageHash } from '../native/pagehash.ts';
import { DEFAULT_MAX_FRAME_BYTES, FrameType, HEADER_BYTES, PAGE_RECORD_HEADER_BYTES, PAGES_PREFIX_BYTES, PROTOCOL_VERSION, PageEncoding } from './constants.ts';
import { crc32 } from './crc32.ts';
import { digestPages, isZeroPage, zeroPageDigest } from '../native/page-digest.ts';

/**
 * The sender's fast path for uncompressed pages: one whole PAGES frame
 * (header, prefix, records, payloads) built in a single buffer, the page
 * digests computed by one native call over the batch. Byte for byte the same
 * frame that encodeFrame(pagesFrame(seq, encodePages(...))) produces, without
 * the per-page record objects, snapshots and part lists that made encoding,
 * not the network, the limit.
 */
export interface EncodedPagesFrame {
  readonly frame: Buffer;
  /** Digest of each page as sent, in the order given. */
  readonly digests: BigUint64Array;
  readonly pages: number;
}

export interface RawFrameOptions {
  /** Where page i lies in `src`, in pages; default i (the pages back to back). */
  readonly srcPos?: Uint32Array;
  readonly maxFrameBytes?: number;
}

/**
 * Encodes `indices.length` pages taken from `src` (page i at srcPos[i]). With
 * the native packer `src` may be the live image: each page is copied into the
 * frame and hashed from the copy. Without it, `src` must be a private snapshot.
 */
export function encodeRawPagesFrame(seq: number, indices: ArrayLike<number>, src: Uint8Array, pageSize: number, o: RawFrameOptions = {}): EncodedPagesFrame {
  const n = indices.length;
  const max = o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (!Number.isSafeInteger(seq) || seq < 0) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `seq must be a non-negative safe integer, got ${seq}`);
  const idx = indices instanceof Uint32Array ? indices : Uint32Array.from(indices as ArrayLike<number>);
  for (let i = 0; i < n; i++) {
    const v = indices[i];
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `page index ${v} is not a u32`);
  }
  const pos = o.srcPos ?? Uint32Array.from({ length: n }, (_, i) => i);
  if (pos.length < n) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `srcPos lists ${pos.length} pages, ${n} needed`);
  const srcPages = Math.floor(src.length / pageSize);
  for (let i = 0; i < n; i++) if (pos[i] >= srcPages) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `page ${i} lies at ${pos[i]}, beyond the ${srcPages} pages of the source`);
  const pack = nativePageHash?.packPages;
  if (pack) {
    const worst = HEADER_BYTES + PAGES_PREFIX_BYTES + n * (PAGE_RECORD_HEADER_BYTES + pageSize);
    const buf = Buffer.allocUnsafe(worst);
    const digests = new BigUint64Array(n);
    writePrefix(buf, seq, n);
    // The payload CRC continues over the records as the packer writes them.
    const crc = Uint32Array.of(crc32(buf.subarray(HEADER_BYTES, HEADER_BYTES + PAGES_PREFIX_BYTES)));
    const end = pack(src, pageSize, pos, idx, n, buf, HEADER_BYTES + PAGES_PREFIX_BYTES, digests, crc);
    if (end > max) throw tooLarge(end, max);
    const frame = buf.subarray(0, end);
    finishHeader(frame, crc[0]);
    return { frame, digests, pages: n };
  }
  // Portable path: gather a snapshot, hash it in one call, lay the records out.
  const data = new Uint8Array(n * pageSize);
  for (let i = 0; i < n; i++) data.set(src.subarray(pos[i] * pageSize, (pos[i] + 1) * pageSize), i * pageSize);
  const digests = new BigUint64Array(n);
  if (n > 0) digestPages(data, pageSize, 0, n, digests, 0);
  const zd = zeroPageDigest(pageSize);
  // A digest equal to the zero page's is confirmed byte by byte: a page is only
  // ever sent as ZERO when it really is all zeros.
  const zero = new Uint8Array(n);
  let payloadBytes = PAGES_PREFIX_BYTES;
  for (let i = 0; i < n; i++) {
    if (digests[i] === zd && isZeroPage(data.subarray(i * pageSize, (i + 1) * pageSize))) zero[i] = 1;
    payloadBytes += PAGE_RECORD_HEADER_BYTES + (zero[i] ? 0 : pageSize);
  }
  if (payloadBytes + HEADER_BYTES > max) throw tooLarge(payloadBytes + HEADER_BYTES, max);
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payloadBytes);
  let at = HEADER_BYTES + PAGES_PREFIX_BYTES;
  for (let i = 0; i < n; i++) {
    frame.writeUInt32LE(idx[i], at);
    frame.writeBigUInt64LE(digests[i], at + 4);
    frame.writeUInt8(zero[i] ? PageEncoding.ZERO : PageEncoding.RAW, at + 12);
    frame.writeUInt32LE(zero[i] ? 0 : pageSize, at + 13);
    at += PAGE_RECORD_HEADER_BYTES;
    if (!zero[i]) {
      frame.set(data.subarray(i * pageSize, (i + 1) * pageSize), at);
      at += pageSize;
    }
  }
  finishFrame(frame, seq, n);
  return { frame, digests, pages: n };
}

function tooLarge(bytes: number, max: number): PresyncError {
  return new PresyncError(ErrorCodes.FRAME_TOO_LARGE, `pages frame would be ${bytes} bytes, limit ${max}; send fewer pages per frame`);
}

function writePrefix(frame: Buffer, seq: number, n: number): void {
  frame.writeBigUInt64LE(BigInt(seq), HEADER_BYTES);
  frame.writeUInt32LE(n, HEADER_BYTES + 8);
}

/** The header with both CRCs, around a payload already in place. */
function finishHeader(frame: Buffer, payloadCrc: number): void {
  frame.writeUInt8(PROTOCOL_VERSION, 0);
  frame.writeUInt8(FrameType.PAGES, 1);
  frame.writeUInt16LE(0, 2);
  frame.writeUInt32LE(frame.length - HEADER_BYTES, 4);
  frame.writeUInt32LE(payloadCrc >>> 0, 8);
  frame.writeUInt32LE(crc32(frame.subarray(0, 12)), 12);
}

/** Prefix, header and both CRCs around records already in place. */
function finishFrame(frame: Buffer, seq: number, n: number): void {
  writePrefix(frame, seq, n);
  finishHeader(frame, crc32(frame.subarray(HEADER_BYTES)));
}

/** True when the native hasher is there: without it the record path is as fast. */
export const hasFastPagesFrame = nativePageHash !== null;
