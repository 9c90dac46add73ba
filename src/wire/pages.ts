import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import { HEADER_BYTES, PAGE_RECORD_HEADER_BYTES, PAGES_PREFIX_BYTES, PageEncoding } from './constants.ts';
import { digestPage, isZeroPage, zeroPageDigest } from '../native/page-digest.ts';
import type { PageRecord, PagesFrame } from './frames.ts';
import { codecForEncoding, deflateCodec, lz4Codec, type CodecName, type PageCodec } from './page-codecs.ts';

export interface PageEncodeOptions {
  readonly pageSize: number;
  /** Compression to try on non-zero pages; 'none' sends them raw. */
  readonly codec?: CodecName | 'none';
  readonly deflateLevel?: number;
  /**
   * Copy raw pages out of the image (default true). The guest keeps writing
   * while the frame waits in the socket buffer; without a snapshot the bytes
   * sent would no longer match the digest and the target would reject them.
   */
  readonly copyRaw?: boolean;
}

export interface DecodedPage {
  readonly index: number;
  readonly digest: bigint;
  /** The page's bytes; null for a zero page (write zeros). */
  readonly data: Uint8Array | null;
}

const defaultDeflate = deflateCodec(1);

function pickCodec(opts: PageEncodeOptions): PageCodec | undefined {
  const name = opts.codec ?? 'none';
  if (name === 'none') return undefined;
  if (name === 'deflate') return opts.deflateLevel === undefined ? defaultDeflate : deflateCodec(opts.deflateLevel);
  const lz4 = lz4Codec();
  if (!lz4) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'lz4 requested but lz4-napi is not installed for this platform; use deflate');
  return lz4;
}

/**
 * Encodes one page: zero pages travel as a bare header, others compressed when
 * that makes them smaller, raw otherwise. The digest is of `data` as given.
 */
export function encodePage(index: number, data: Uint8Array, opts: PageEncodeOptions, codec = pickCodec(opts)): PageRecord {
  if (data.length !== opts.pageSize) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `page ${index} is ${data.length} bytes, page size ${opts.pageSize}`);
  }
  if (isZeroPage(data)) return { index, digest: zeroPageDigest(opts.pageSize), encoding: PageEncoding.ZERO, payload: new Uint8Array(0) };
  // Uint8Array.prototype.slice copies; Buffer#slice would return a view and
  // the snapshot would change under the digest.
  const snapshot = opts.copyRaw === false ? data : Uint8Array.prototype.slice.call(data);
  const digest = digestPage(snapshot);
  const compressed = codec?.compress(snapshot);
  if (codec && compressed) return { index, digest, encoding: codec.encoding, payload: compressed };
  return { index, digest, encoding: PageEncoding.RAW, payload: snapshot };
}

/** Encodes the listed pages of an image (index i lives at bytes i*pageSize..). */
export function encodePages(image: Uint8Array, indices: ArrayLike<number>, opts: PageEncodeOptions): PageRecord[] {
  const codec = pickCodec(opts);
  const ps = opts.pageSize;
  const out: PageRecord[] = new Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const idx = indices[i];
    if (!Number.isInteger(idx) || idx < 0 || (idx + 1) * ps > image.length) {
      throw new PresyncError(ErrorCodes.PAGE_RANGE, `page ${idx} lies outside the ${image.length}-byte image`);
    }
    out[i] = encodePage(idx, image.subarray(idx * ps, (idx + 1) * ps), opts, codec);
  }
  return out;
}

/** How many pages a PAGES frame can always hold, whatever they compress to. */
export function maxPagesPerFrame(pageSize: number, maxFrameBytes: number): number {
  return Math.max(0, Math.floor((maxFrameBytes - HEADER_BYTES - PAGES_PREFIX_BYTES) / (PAGE_RECORD_HEADER_BYTES + pageSize)));
}

/** Wire size of a batch of records, header included. */
export function pagesFrameBytes(pages: readonly PageRecord[]): number {
  let n = HEADER_BYTES + PAGES_PREFIX_BYTES;
  for (const p of pages) n += PAGE_RECORD_HEADER_BYTES + p.payload.length;
  return n;
}

/**
 * Fully validates one received page: index in range, payload decodes to
 * exactly pageSize bytes (bounded, so no bomb), and its XXH64 equals the
 * digest the sender carried. Only a page that passes may touch the image.
 */
export function decodePage(rec: PageRecord, geometry: Geometry): DecodedPage {
  const { pageSize, pageCount } = geometry;
  if (!Number.isInteger(rec.index) || rec.index < 0 || rec.index >= pageCount) {
    throw new PresyncError(ErrorCodes.PAGE_RANGE, `page ${rec.index} beyond page count ${pageCount}`);
  }
  let data: Uint8Array | null;
  let digest: bigint;
  switch (rec.encoding) {
    case PageEncoding.ZERO:
      if (rec.payload.length !== 0) throw new PresyncError(ErrorCodes.PROTOCOL, `zero page ${rec.index} carries ${rec.payload.length} bytes`);
      data = null;
      digest = zeroPageDigest(pageSize);
      break;
    case PageEncoding.RAW:
      if (rec.payload.length !== pageSize) {
        throw new PresyncError(ErrorCodes.PROTOCOL, `raw page ${rec.index} is ${rec.payload.length} bytes, page size ${pageSize}`);
      }
      data = rec.payload;
      digest = digestPage(data);
      break;
    default:
      if (rec.payload.length >= pageSize) {
        throw new PresyncError(ErrorCodes.PROTOCOL, `compressed page ${rec.index} is ${rec.payload.length} bytes, not below page size ${pageSize}`);
      }
      data = codecForEncoding(rec.encoding, defaultDeflate).decompress(rec.payload, pageSize);
      digest = digestPage(data);
  }
  if (digest !== rec.digest) {
    throw new PresyncError(
      ErrorCodes.CHECKSUM,
      `page ${rec.index}: content digest ${digest.toString(16)} differs from carried ${rec.digest.toString(16)}; page rejected`,
    );
  }
  return { index: rec.index, digest, data };
}

/** Validates every page of a batch; throws on the first bad one, so a batch is all-or-nothing. */
export function decodePageBatch(frame: PagesFrame, geometry: Geometry): DecodedPage[] {
  return frame.pages.map((p) => decodePage(p, geometry));
}

/**
 * Validates the whole batch, then writes it into `image`. Nothing is written
 * when any page is bad. Returns the applied pages (their digests update the
 * target's digest table).
 */
export function applyPageBatch(frame: PagesFrame, geometry: Geometry, image: Uint8Array): DecodedPage[] {
  if (image.length < geometry.pageSize * geometry.pageCount) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `image is ${image.length} bytes, geometry needs ${geometry.pageSize * geometry.pageCount}`);
  }
  const decoded = decodePageBatch(frame, geometry);
  const ps = geometry.pageSize;
  for (const p of decoded) {
    const at = p.index * ps;
    if (p.data === null) image.fill(0, at, at + ps);
    else image.set(p.data, at);
  }
  return decoded;
}

export function pagesFrame(seq: number, pages: readonly PageRecord[]): PagesFrame {
  return { type: 'pages', seq, pages };
}
