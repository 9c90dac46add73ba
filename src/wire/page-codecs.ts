import { createRequire } from 'node:module';
import * as zlib from 'node:zlib';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { Capability, PageEncoding, type PageEncodingCode } from './constants.ts';

/**
 * Page compressors. deflate is built into Node and always present. lz4 comes
 * from the optional `lz4-napi` package (prebuilt binaries shipped in npm
 * packages) and is loaded on first use; a host without it simply does not
 * advertise the capability. zstd is not offered: zstd-napi has no prebuilt
 * binary inside its npm package, so every install would download one (not
 * possible offline) or compile libzstd from source (about a minute here);
 * lz4 gives the fast-codec option without that cost.
 */

export type CodecName = 'deflate' | 'lz4';

export interface PageCodec {
  readonly name: CodecName;
  readonly encoding: PageEncodingCode;
  readonly capability: number;
  /** Compressed bytes, or undefined when compression would not make the page smaller. */
  compress(page: Uint8Array): Uint8Array | undefined;
  /** Exactly pageSize bytes, or a PresyncError; never allocates more than pageSize (+ small constant). */
  decompress(payload: Uint8Array, pageSize: number): Uint8Array;
}

function malformed(codec: string, detail: string, cause?: unknown): PresyncError {
  return new PresyncError(ErrorCodes.PROTOCOL, `${codec} page payload is malformed: ${detail}`, { cause });
}

function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

export function deflateCodec(level = 1): PageCodec {
  return {
    name: 'deflate',
    encoding: PageEncoding.DEFLATE,
    capability: Capability.DEFLATE,
    compress(page) {
      const c = zlib.deflateRawSync(page, { level });
      return c.length < page.length ? c : undefined;
    },
    decompress(payload, pageSize) {
      let out: Buffer;
      try {
        // maxOutputLength stops a decompression bomb inside zlib, before it allocates.
        out = zlib.inflateRawSync(payload, { maxOutputLength: pageSize });
      } catch (e) {
        throw malformed('deflate', e instanceof Error ? e.message : String(e), e);
      }
      if (out.length !== pageSize) throw malformed('deflate', `inflates to ${out.length} bytes, page size ${pageSize}`);
      return out;
    },
  };
}

interface Lz4Module {
  compressSync(data: Buffer): Buffer;
  uncompressSync(data: Buffer): Buffer;
}

let lz4Module: Lz4Module | null | undefined;

function loadLz4(): Lz4Module | null {
  if (lz4Module === undefined) {
    try {
      lz4Module = createRequire(import.meta.url)('lz4-napi') as Lz4Module;
    } catch {
      lz4Module = null;
    }
  }
  return lz4Module;
}

/** The lz4 codec, or undefined when lz4-napi is not installed for this platform. */
export function lz4Codec(): PageCodec | undefined {
  const lz4 = loadLz4();
  if (lz4 === null) return undefined;
  return {
    name: 'lz4',
    encoding: PageEncoding.LZ4,
    capability: Capability.LZ4,
    compress(page) {
      // lz4-napi prepends the decompressed size (u32 LE) to the block.
      const c = lz4.compressSync(asBuffer(page));
      return c.length < page.length ? c : undefined;
    },
    decompress(payload, pageSize) {
      // The size prefix decides lz4-napi's allocation: check it before handing the block over.
      if (payload.length < 5) throw malformed('lz4', `${payload.length}-byte payload is too short`);
      const claimed = asBuffer(payload).readUInt32LE(0);
      if (claimed !== pageSize) throw malformed('lz4', `claims ${claimed} bytes, page size ${pageSize}`);
      let out: Buffer;
      try {
        out = lz4.uncompressSync(asBuffer(payload));
      } catch (e) {
        throw malformed('lz4', e instanceof Error ? e.message : String(e), e);
      }
      if (out.length !== pageSize) throw malformed('lz4', `decompresses to ${out.length} bytes, page size ${pageSize}`);
      return out;
    },
  };
}

/** Capability bits for the codecs this process can decode. */
export function localCodecCapabilities(): number {
  return Capability.DEFLATE | (lz4Codec() ? Capability.LZ4 : 0);
}

/** The codec that decodes `encoding`, or a PROTOCOL error when this build has none. */
export function codecForEncoding(encoding: PageEncodingCode, deflate: PageCodec): PageCodec {
  if (encoding === PageEncoding.DEFLATE) return deflate;
  if (encoding === PageEncoding.LZ4) {
    const c = lz4Codec();
    if (c) return c;
    throw new PresyncError(ErrorCodes.PROTOCOL, 'peer sent an lz4 page but lz4-napi is not installed here (it was not negotiated)');
  }
  throw new PresyncError(ErrorCodes.PROTOCOL, `no decoder for page encoding ${encoding} in this build`);
}
