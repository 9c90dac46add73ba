/**
 * Property-based fuzzing of the wire codec, shared by the CI tests
 * (test/unit/fuzz-*.test.ts, tens of thousands of cases) and scripts/fuzz.ts
 * (millions). Every property states what hostile bytes may do to a decoder:
 * produce well-formed frames, or fail with a PresyncError carrying a wire
 * code; nothing else, and never hold more than one frame's worth of bytes.
 */
import fc from 'fast-check';
import { deflateRawSync } from 'node:zlib';
import { ErrorCodes, PresyncError, type ErrorCode } from '../../src/core/errors.ts';
import type { Geometry } from '../../src/core/types.ts';
import { Capability, FrameType, HEADER_BYTES, MIN_MAX_FRAME_BYTES, PageEncoding, PHASES, PROTOCOL_VERSION, type PageEncodingCode } from '../../src/wire/constants.ts';
import { crc32 } from '../../src/wire/crc32.ts';
import { FrameDecoder } from '../../src/wire/decoder.ts';
import { digestPage, zeroPageDigest } from '../../src/native/page-digest.ts';
import { DigestRunCollector } from '../../src/wire/digest-runs.ts';
import type { DigestRun, Frame, PageRecord } from '../../src/wire/frames.ts';
import { encodeFrame } from '../../src/wire/framing.ts';
import { ClientHandshake, ServerHandshake, errorFromFrame } from '../../src/wire/handshake.ts';
import { lz4Codec } from '../../src/wire/page-codecs.ts';
import { applyPageBatch, decodePageBatch } from '../../src/wire/pages.ts';

/** Codes a frame decoder may throw for bad bytes; anything else (INTERNAL above all) is a crash. */
export const DECODER_CODES: ReadonlySet<ErrorCode> = new Set([
  ErrorCodes.PROTOCOL,
  ErrorCodes.FRAME_TOO_LARGE,
  ErrorCodes.CHECKSUM,
  ErrorCodes.VERSION,
  ErrorCodes.PAGE_RANGE,
]);
export const PAGE_CODES: ReadonlySet<ErrorCode> = new Set([ErrorCodes.PROTOCOL, ErrorCodes.CHECKSUM, ErrorCodes.PAGE_RANGE]);
export const HANDSHAKE_CODES: ReadonlySet<ErrorCode> = new Set([ErrorCodes.PROTOCOL, ErrorCodes.AUTH, ErrorCodes.VERSION, ErrorCodes.GEOMETRY]);
const KNOWN_CODES = new Set<string>(Object.values(ErrorCodes));

/** Small enough that length-field mutations often cross it; the smallest a decoder accepts. */
export const FUZZ_MAX_FRAME = MIN_MAX_FRAME_BYTES;

export class PropertyViolation extends Error {}

function violation(message: string, cause?: unknown): never {
  throw new PropertyViolation(message, { cause });
}

/** Passes only a PresyncError whose code is in `allowed`; rethrows anything else as a violation. */
export function expectCode(e: unknown, allowed: ReadonlySet<string>, where: string): PresyncError {
  if (e instanceof PropertyViolation) throw e;
  if (!(e instanceof PresyncError)) violation(`${where} threw a non-PresyncError: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, e);
  if (!allowed.has(e.code)) violation(`${where} threw ${e.code} (${e.message}); allowed: ${[...allowed].join(', ')}`, e);
  return e;
}

// ---------------------------------------------------------------- generators

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: 0xffffffffffffffffn });
const u53 = fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));
const bytes = (n: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ minLength: n, maxLength: n });
/** Strings that stress UTF-8 handling: BOMs, astral characters, NULs, path tricks. */
const nastyString = (maxBytes: number): fc.Arbitrary<string> =>
  fc
    .oneof(
      fc.string({ maxLength: 24 }),
      fc.fullUnicodeString({ maxLength: 16 }),
      fc.constantFrom('', '\uFEFF', '\uFEFFimage', '../../etc/passwd', 'a\0b', '.', '..', 'vm-42/ram0 ✓', '𝔭𝔯𝔢𝔰𝔶𝔫𝔠'),
    )
    .filter((s) => Buffer.byteLength(s) <= maxBytes);
const errorCode = fc.oneof(fc.constantFrom(...Object.values(ErrorCodes)), fc.stringMatching(/^[A-Z0-9_]{1,64}$/));
const pageSizeArb = fc.constantFrom(512, 1024, 4096, 65536);

export function arbGeometry(): fc.Arbitrary<Geometry> {
  return fc.record({ pageSize: fc.constantFrom(512, 1024, 4096), pageCount: fc.integer({ min: 1, max: 64 }) });
}

const arbPageRecord = (geometry?: Geometry): fc.Arbitrary<PageRecord> => {
  const index = geometry ? fc.integer({ min: 0, max: geometry.pageCount - 1 }) : u32;
  const size = geometry?.pageSize ?? 512;
  return fc.oneof(
    fc.record({ index, digest: u64, encoding: fc.constant(PageEncoding.ZERO as PageEncodingCode), payload: fc.constant(new Uint8Array(0)) }),
    fc.record({ index, digest: u64, encoding: fc.constant(PageEncoding.RAW as PageEncodingCode), payload: bytes(size) }),
    fc.record({
      index,
      digest: u64,
      encoding: fc.constantFrom(PageEncoding.DEFLATE, PageEncoding.LZ4, PageEncoding.ZSTD) as fc.Arbitrary<PageEncodingCode>,
      payload: fc.uint8Array({ minLength: 1, maxLength: Math.min(64, size - 1) }),
    }),
  );
};

const digestRunArb = (geometry?: Geometry) =>
  (geometry
    ? fc.integer({ min: 0, max: geometry.pageCount }).chain((first) =>
        fc.record({ first: fc.constant(first), n: fc.integer({ min: 0, max: geometry.pageCount - first }) }),
      )
    : fc.record({ first: fc.oneof(fc.integer({ min: 0, max: 100 }), fc.constant(0xffffffff - 3)), n: fc.integer({ min: 0, max: 3 }) })
  ).chain(({ first, n }) =>
    fc.record({
      first: fc.constant(first),
      digests: fc.array(u64, { minLength: n, maxLength: n }).map((a) => BigUint64Array.from(a)),
      final: fc.boolean(),
    }),
  );

/** A layout of `pageCount` pages cut where `cuts` say (each cut inside the image, duplicates dropped). */
function segmentsOf(pageCount: number, cuts: number[]): Array<{ id: string; pageCount: number }> {
  const at = [...new Set(cuts.map((c) => c % pageCount).filter((c) => c > 0))].sort((a, b) => a - b);
  const bounds = [0, ...at, pageCount];
  return bounds.slice(1).map((end, i) => ({ id: `m${i}`, pageCount: end - bounds[i] }));
}

/** Any frame the encoder accepts; with a geometry, page indices and sizes fit it. */
export function arbFrame(geometry?: Geometry): fc.Arbitrary<Frame> {
  return fc.oneof(
    fc.record({
      type: fc.constant('hello' as const),
      version: fc.oneof(fc.constant(PROTOCOL_VERSION), u16),
      capabilities: u32,
      pageSize: pageSizeArb,
      pageCount: fc.integer({ min: 1, max: 0xffffffff }),
      imageId: nastyString(256),
      sessionId: nastyString(128),
      nonce: bytes(32),
      lineageId: nastyString(64),
      cuts: fc.array(fc.integer({ min: 1, max: 0xfffffffe }), { maxLength: 4 }),
    })
      .map(({ lineageId, ...f }) => ((f.capabilities & Capability.LINEAGE) !== 0 ? { ...f, lineageId } : f))
      .map(({ cuts, ...f }) => ((f.capabilities & Capability.SEGMENTS) !== 0 ? { ...f, segments: segmentsOf(f.pageCount, cuts) } : f)),
    fc.oneof(
      fc.record({ pageSize: fc.constant(0), pageCount: fc.constant(0) }),
      fc.record({ pageSize: pageSizeArb, pageCount: fc.integer({ min: 1, max: 0xffffffff }) }),
    ).chain((g) =>
      fc.record({
        type: fc.constant('challenge' as const),
        version: fc.oneof(fc.constant(PROTOCOL_VERSION), u16),
        capabilities: u32,
        pageSize: fc.constant(g.pageSize),
        pageCount: fc.constant(g.pageCount),
        nonce: bytes(32),
        proof: bytes(32),
      }),
    ),
    fc.record({ type: fc.constant('auth' as const), proof: bytes(32) }),
    fc.record({ type: fc.constant('welcome' as const), capabilities: u32, resume: fc.boolean() }),
    fc.record({ type: fc.constant('error' as const), code: errorCode, message: nastyString(1024) }),
    fc.record({ type: fc.constant('pages' as const), seq: u53, pages: fc.array(arbPageRecord(geometry), { maxLength: 4 }) }),
    fc.record({ type: fc.constant('ack' as const), seq: u53 }),
    digestRunArb(geometry).map((r) => ({ type: 'have' as const, ...r })),
    digestRunArb(geometry).map((r) => ({ type: 'verify-request' as const, ...r })),
    fc
      .uniqueArray(u32, { maxLength: 8 })
      .chain((list) => {
        const sorted = Uint32Array.from(list.sort((a, b) => a - b));
        if (sorted.length === 0) {
          return fc.oneof(
            fc.constant({ type: 'verify-response' as const, match: true, mismatchCount: 0, mismatches: sorted }),
            fc.integer({ min: 1, max: 0xffffffff }).map((c) => ({ type: 'verify-response' as const, match: false, mismatchCount: c, mismatches: sorted })),
          );
        }
        return fc
          .integer({ min: sorted.length, max: 0xffffffff })
          .map((c) => ({ type: 'verify-response' as const, match: false, mismatchCount: c, mismatches: sorted }));
      }),
    fc.record({
      type: fc.constant('verify-summary' as const),
      pageCount: fc.integer({ min: 0, max: 0xffffffff }),
      sha256: bytes(32),
    }),
    fc.record({ type: fc.constant('verify-summary-response' as const), match: fc.boolean() }),
    fc.record({ type: fc.constant('phase' as const), phase: fc.constantFrom(...PHASES) }),
    fc.uint8Array({ maxLength: 48 }).chain((data) =>
      fc.integer({ min: 0, max: 1 << 20 }).chain((offset) =>
        fc.integer({ min: offset + data.length, max: offset + data.length + (1 << 20) }).map((totalLength) => ({
          type: 'device-state' as const,
          totalLength,
          offset,
          data,
        })),
      ),
    ),
    fc.constant({ type: 'handover' as const }),
    fc.constant({ type: 'handover-done' as const }),
    fc.record({ type: fc.constant('abort' as const), reason: nastyString(1024) }),
    fc.record({ type: fc.constant('ping' as const), nonce: u64 }),
    fc.record({ type: fc.constant('pong' as const), nonce: u64 }),
  ) as fc.Arbitrary<Frame>;
}

/** Cut points into a byte stream; `byteAtATime` feeds one byte per push. */
export const arbChunking = fc.oneof(
  { weight: 6, arbitrary: fc.array(fc.integer({ min: 0, max: 1 << 30 }), { maxLength: 8 }).map((cuts) => ({ cuts, byteAtATime: false })) },
  { weight: 1, arbitrary: fc.constant({ cuts: [] as number[], byteAtATime: true }) },
);
export type Chunking = { readonly cuts: readonly number[]; readonly byteAtATime: boolean };

export function chunk(stream: Uint8Array, how: Chunking): Uint8Array[] {
  if (how.byteAtATime) return Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
  const at = [...new Set(how.cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...at, stream.length]) {
    // Copies, as a socket would deliver them: a view would let a mutation elsewhere leak in.
    out.push(new Uint8Array(stream.subarray(prev, c)));
    prev = c;
  }
  return out;
}

/** A header with correct CRCs around any payload: reaches the payload parsers past the checksums. */
export function reframe(type: number, payload: Uint8Array, o: { version?: number; flags?: number; length?: number } = {}): Uint8Array {
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt8(o.version ?? PROTOCOL_VERSION, 0);
  h.writeUInt8(type, 1);
  h.writeUInt16LE(o.flags ?? 0, 2);
  h.writeUInt32LE(o.length ?? payload.length, 4);
  h.writeUInt32LE(crc32(payload), 8);
  h.writeUInt32LE(crc32(h.subarray(0, 12)), 12);
  return Buffer.concat([h, payload]);
}

export type Mutation =
  | { kind: 'flip'; flips: Array<{ pos: number; bit: number }> }
  | { kind: 'truncate'; at: number }
  | { kind: 'length'; value: number; fixCrc: boolean }
  | { kind: 'type'; value: number; fixCrc: boolean }
  | { kind: 'version'; value: number }
  | { kind: 'flags'; value: number }
  | { kind: 'payload-edit'; edits: Array<{ pos: number; value: number }> }
  | { kind: 'payload-splice'; pos: number; remove: number; insert: Uint8Array };

export const arbMutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), flips: fc.array(fc.record({ pos: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }), { minLength: 1, maxLength: 4 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('length' as const),
    value: fc.oneof(u32, fc.integer({ min: 0, max: 200 }), fc.constantFrom(FUZZ_MAX_FRAME - HEADER_BYTES, FUZZ_MAX_FRAME - HEADER_BYTES + 1, 0xffffffff)),
    fixCrc: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('type' as const), value: u8, fixCrc: fc.boolean() }),
  fc.record({ kind: fc.constant('version' as const), value: u8 }),
  fc.record({ kind: fc.constant('flags' as const), value: u16 }),
  // Payload edits keep the CRCs right, so they test the parsers rather than the checksums.
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('payload-edit' as const), edits: fc.array(fc.record({ pos: fc.nat(), value: u8 }), { minLength: 1, maxLength: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('payload-splice' as const), pos: fc.nat(), remove: fc.integer({ min: 0, max: 16 }), insert: fc.uint8Array({ maxLength: 16 }) }) },
);

export function mutate(frame: Uint8Array, m: Mutation): Uint8Array {
  const b = Buffer.from(frame);
  const type = b.readUInt8(1);
  const payload = b.subarray(HEADER_BYTES);
  switch (m.kind) {
    case 'flip':
      for (const f of m.flips) b[f.pos % b.length] ^= 1 << f.bit;
      return b;
    case 'truncate':
      return b.subarray(0, m.at % b.length);
    case 'length':
      b.writeUInt32LE(m.value, 4);
      if (m.fixCrc) b.writeUInt32LE(crc32(b.subarray(0, 12)), 12);
      return b;
    case 'type':
      return m.fixCrc ? reframe(m.value, payload) : (b.writeUInt8(m.value, 1), b);
    case 'version':
      return reframe(type, payload, { version: m.value });
    case 'flags':
      return reframe(type, payload, { flags: m.value });
    case 'payload-edit': {
      if (payload.length === 0) return reframe(type, Uint8Array.from(m.edits.map((e) => e.value)));
      const p = Buffer.from(payload);
      for (const e of m.edits) p[e.pos % p.length] = e.value;
      return reframe(type, p);
    }
    case 'payload-splice': {
      const at = m.pos % (payload.length + 1);
      return reframe(type, Buffer.concat([payload.subarray(0, at), m.insert, payload.subarray(at + m.remove)]));
    }
  }
}

// ---------------------------------------------------------------- decoder

interface DecodeRun {
  readonly frames: Frame[];
  readonly error: PresyncError | undefined;
}

/**
 * Feeds chunks to a decoder and checks, after every push, the invariants that
 * hold whatever the bytes: a failure is a PresyncError with a wire code; a
 * failed decoder stays failed; what it keeps buffered is one partial frame,
 * below the frame limit.
 */
export function feed(chunks: readonly Uint8Array[], opts: { maxFrameBytes: number; geometry?: Geometry }): DecodeRun {
  const d = new FrameDecoder(opts);
  const frames: Frame[] = [];
  let error: PresyncError | undefined;
  for (const c of chunks) {
    try {
      frames.push(...d.push(c));
    } catch (e) {
      error = expectCode(e, DECODER_CODES, 'FrameDecoder.push');
      break;
    }
    if (d.bufferedBytes >= opts.maxFrameBytes) violation(`decoder holds ${d.bufferedBytes} bytes, limit ${opts.maxFrameBytes}`);
  }
  if (error) {
    try {
      d.push(new Uint8Array([1, 2, 3]));
      violation('a failed decoder accepted more bytes');
    } catch (e) {
      if (e !== error) expectCode(e, DECODER_CODES, 'failed FrameDecoder.push');
    }
    return { frames, error };
  }
  try {
    d.end();
  } catch (e) {
    error = expectCode(e, new Set([ErrorCodes.CONNECTION]), 'FrameDecoder.end');
  }
  return { frames, error };
}

/**
 * Decoding is canonical: the frames a decoder accepts re-encode to exactly the
 * bytes they came from (the handshake's proofs depend on it), so together they
 * are a prefix of the stream, and each fits the frame limit.
 */
function checkCanonical(stream: Uint8Array, frames: readonly Frame[], maxFrameBytes: number): void {
  let at = 0;
  for (const f of frames) {
    let enc: Uint8Array;
    try {
      enc = encodeFrame(f, { maxFrameBytes });
    } catch (e) {
      violation(`a decoded ${f.type} frame does not re-encode: ${(e as Error).message}`, e);
    }
    if (!Buffer.from(enc).equals(Buffer.from(stream.subarray(at, at + enc.length)))) {
      violation(`a decoded ${f.type} frame re-encodes to different bytes than it was decoded from (offset ${at})`);
    }
    at += enc.length;
  }
}

export const decoderProperties = {
  /** Arbitrary bytes, arbitrarily chunked. */
  arbitraryBytes: () =>
    fc.property(fc.uint8Array({ maxLength: 256 }), arbChunking, fc.option(arbGeometry(), { nil: undefined }), (stream, how, geometry) => {
      const r = feed(chunk(stream, how), { maxFrameBytes: FUZZ_MAX_FRAME, ...(geometry ? { geometry } : {}) });
      checkCanonical(stream, r.frames, FUZZ_MAX_FRAME);
    }),

  /** Arbitrary payloads behind correct headers, of known and unknown types. */
  arbitraryPayloads: () =>
    fc.property(
      fc.oneof(fc.constantFrom(...Object.values(FrameType)), u8),
      fc.uint8Array({ maxLength: 200 }),
      arbChunking,
      fc.option(arbGeometry(), { nil: undefined }),
      (type, payload, how, geometry) => {
        const stream = reframe(type, payload);
        const r = feed(chunk(stream, how), { maxFrameBytes: FUZZ_MAX_FRAME, ...(geometry ? { geometry } : {}) });
        checkCanonical(stream, r.frames, FUZZ_MAX_FRAME);
      },
    ),

  /** Valid frames, one of them mutated, arbitrarily chunked. */
  mutatedFrames: () =>
    fc.property(
      fc.option(arbGeometry(), { nil: undefined }).chain((g) =>
        fc.record({ geometry: fc.constant(g), frames: fc.array(arbFrame(g), { minLength: 1, maxLength: 4 }), victim: fc.nat(), mutation: arbMutation }),
      ),
      arbChunking,
      ({ geometry, frames, victim, mutation }, how) => {
        const encoded: Uint8Array[] = frames.map((f) => encodeFrame(f));
        const v = victim % encoded.length;
        encoded[v] = mutate(encoded[v], mutation);
        const stream = Buffer.concat(encoded);
        const r = feed(chunk(stream, how), { maxFrameBytes: FUZZ_MAX_FRAME, ...(geometry ? { geometry } : {}) });
        // A push that fails drops the frames it completed before the bad bytes
        // (the decoder is failed from then on), so only byte-at-a-time feeding
        // is guaranteed to deliver every frame before the mutated one.
        if (how.byteAtATime && r.frames.length < v) violation(`only ${r.frames.length} frames decoded before the mutated frame ${v}`);
        checkCanonical(stream, r.frames, FUZZ_MAX_FRAME);
      },
    ),

  /** Unmutated valid frames round-trip exactly, however they are chunked. */
  roundTrip: () =>
    fc.property(
      fc.option(arbGeometry(), { nil: undefined }).chain((g) => fc.record({ geometry: fc.constant(g), frames: fc.array(arbFrame(g), { maxLength: 5 }) })),
      arbChunking,
      ({ geometry, frames }, how) => {
        const stream = Buffer.concat(frames.map((f) => encodeFrame(f)));
        const r = feed(chunk(stream, how), { maxFrameBytes: FUZZ_MAX_FRAME, ...(geometry ? { geometry } : {}) });
        if (r.error) violation(`valid frames failed to decode: ${r.error.code} ${r.error.message}`);
        if (r.frames.length !== frames.length) violation(`${frames.length} frames in, ${r.frames.length} out`);
        checkCanonical(stream, r.frames, FUZZ_MAX_FRAME);
      },
    ),

  /** A header announcing more than the limit is refused as soon as the header is in, before any payload is held. */
  oversizeAnnounced: () =>
    fc.property(fc.integer({ min: FUZZ_MAX_FRAME - HEADER_BYTES + 1, max: 0xffffffff }), fc.constantFrom(...Object.values(FrameType)), (length, type) => {
      const header = reframe(type, new Uint8Array(0), { length }).subarray(0, HEADER_BYTES);
      const d = new FrameDecoder({ maxFrameBytes: FUZZ_MAX_FRAME });
      for (let i = 0; i < HEADER_BYTES - 1; i++) d.push(header.subarray(i, i + 1));
      try {
        d.push(header.subarray(HEADER_BYTES - 1));
      } catch (e) {
        if (expectCode(e, DECODER_CODES, 'push').code !== ErrorCodes.FRAME_TOO_LARGE) violation(`oversize frame gave ${(e as PresyncError).code}`);
        if (d.bufferedBytes !== 0) violation('a failed decoder still holds bytes');
        return;
      }
      violation(`a ${length}-byte payload announcement was accepted`);
    }),
};

// ---------------------------------------------------------------- page batches

type RecordKind = 'zero' | 'raw' | 'deflate' | 'lz4' | 'random-payload' | 'wrong-digest' | 'out-of-range' | 'truncated-deflate' | 'zstd' | 'lz4-bad-size';

interface BatchCase {
  readonly geometry: Geometry;
  readonly records: Array<{ kind: RecordKind; index: number; content: Uint8Array; random: Uint8Array; digest: bigint }>;
}

const HAS_LZ4 = lz4Codec() !== undefined;

const arbBatchCase: fc.Arbitrary<BatchCase> = arbGeometry().chain((geometry) =>
  fc.record({
    geometry: fc.constant(geometry),
    records: fc.array(
      fc.record({
        kind: fc.oneof(
          { weight: 4, arbitrary: fc.constantFrom<RecordKind>('zero', 'raw', 'deflate', 'lz4') },
          { weight: 1, arbitrary: fc.constantFrom<RecordKind>('random-payload', 'wrong-digest', 'out-of-range', 'truncated-deflate', 'zstd', 'lz4-bad-size') },
        ),
        index: fc.integer({ min: 0, max: geometry.pageCount - 1 }),
        // Compressible content, so the codecs produce something below the page size.
        content: fc
          .record({ fill: u8, spots: fc.array(fc.record({ at: fc.nat(), v: u8 }), { maxLength: 6 }) })
          .map(({ fill, spots }) => {
            const p = new Uint8Array(geometry.pageSize).fill(fill);
            for (const s of spots) p[s.at % p.length] = s.v;
            return p;
          }),
        random: fc.uint8Array({ minLength: 1, maxLength: 48 }),
        digest: u64,
      }),
      { maxLength: 6 },
    ),
  }),
);

function buildRecord(r: BatchCase['records'][number], g: Geometry): { rec: PageRecord; valid: boolean } {
  const ps = g.pageSize;
  const digestOf = (p: Uint8Array): bigint => digestPage(p);
  switch (r.kind) {
    case 'zero':
      return { rec: { index: r.index, digest: zeroPageDigest(ps), encoding: PageEncoding.ZERO, payload: new Uint8Array(0) }, valid: true };
    case 'raw':
      return { rec: { index: r.index, digest: digestOf(r.content), encoding: PageEncoding.RAW, payload: r.content }, valid: true };
    case 'deflate':
      return { rec: { index: r.index, digest: digestOf(r.content), encoding: PageEncoding.DEFLATE, payload: deflateRawSync(r.content) }, valid: true };
    case 'lz4': {
      const lz4 = lz4Codec();
      const payload = lz4?.compress(r.content);
      if (!lz4 || !payload) return { rec: { index: r.index, digest: digestOf(r.content), encoding: PageEncoding.RAW, payload: r.content }, valid: true };
      return { rec: { index: r.index, digest: digestOf(r.content), encoding: PageEncoding.LZ4, payload }, valid: true };
    }
    case 'random-payload':
      return { rec: { index: r.index, digest: r.digest, encoding: r.digest % 2n === 0n ? PageEncoding.DEFLATE : PageEncoding.LZ4, payload: r.random }, valid: false };
    case 'wrong-digest':
      return { rec: { index: r.index, digest: digestOf(r.content) ^ (r.digest | 1n), encoding: PageEncoding.RAW, payload: r.content }, valid: false };
    case 'out-of-range':
      return { rec: { index: g.pageCount + (r.index % 3), digest: digestOf(r.content), encoding: PageEncoding.RAW, payload: r.content }, valid: false };
    case 'truncated-deflate': {
      const full = deflateRawSync(r.content);
      return { rec: { index: r.index, digest: digestOf(r.content), encoding: PageEncoding.DEFLATE, payload: full.subarray(0, Math.max(1, full.length - 1 - (r.random[0] % full.length))) }, valid: false };
    }
    case 'zstd':
      return { rec: { index: r.index, digest: digestOf(r.content), encoding: PageEncoding.ZSTD, payload: r.random }, valid: false };
    case 'lz4-bad-size': {
      // A well-formed lz4 block whose size prefix lies: it must not decide the allocation.
      const block = Buffer.concat([Buffer.alloc(4), r.random]);
      block.writeUInt32LE((ps * (1 + (r.random[0] % 4096))) >>> 0, 0);
      return { rec: { index: r.index, digest: digestOf(r.content), encoding: PageEncoding.LZ4, payload: block.subarray(0, Math.min(block.length, ps - 1)) }, valid: false };
    }
  }
}

export const pageBatchProperties = {
  /**
   * A batch decodes iff every record is valid; decoded pages are exactly
   * pageSize bytes with the carried digest; applying a bad batch leaves the
   * image byte for byte as it was.
   */
  decodeAgainstGeometry: () =>
    fc.property(arbBatchCase, fc.boolean(), ({ geometry, records }, viaWire) => {
      const built = records.map((r) => buildRecord(r, geometry));
      const allValid = built.every((b) => b.valid);
      let frame = { type: 'pages' as const, seq: 1, pages: built.map((b) => b.rec) };
      if (viaWire) {
        // Through the frame decoder too: with the geometry set it checks ranges and sizes first.
        const r = feed([encodeFrame(frame)], { maxFrameBytes: 1 << 20, geometry });
        if (r.error) {
          if (allValid) violation(`a valid batch failed in the frame decoder: ${r.error.code} ${r.error.message}`);
          return;
        }
        frame = r.frames[0] as typeof frame;
      }
      const image = new Uint8Array(geometry.pageSize * geometry.pageCount);
      for (let i = 0; i < image.length; i += 7) image[i] = (i * 31) & 0xff;
      const before = image.slice();
      let decoded;
      try {
        decoded = applyPageBatch(frame, geometry, image);
      } catch (e) {
        expectCode(e, PAGE_CODES, 'applyPageBatch');
        if (allValid) violation(`a valid batch was refused: ${(e as Error).message}`);
        if (!Buffer.from(image).equals(Buffer.from(before))) violation('a refused batch changed the image');
        return;
      }
      if (!allValid) violation(`a batch with ${built.filter((b) => !b.valid).map((_, i) => records[i].kind).join(',')} was accepted`);
      for (const p of decoded) {
        const data = p.data ?? new Uint8Array(geometry.pageSize);
        if (data.length !== geometry.pageSize) violation(`decoded page ${p.index} is ${data.length} bytes`);
        if (digestPage(data) !== p.digest) violation(`decoded page ${p.index} does not match its digest`);
      }
      // Later records for the same page win, as they would on the wire.
      const last = new Map<number, Uint8Array | null>();
      for (const p of decoded) last.set(p.index, p.data);
      for (const [idx, data] of last) {
        const got = image.subarray(idx * geometry.pageSize, (idx + 1) * geometry.pageSize);
        if (!Buffer.from(got).equals(Buffer.from(data ?? new Uint8Array(geometry.pageSize)))) violation(`page ${idx} not written as decoded`);
      }
    }),

  /** Arbitrary records (any index, encoding, payload) against a geometry. */
  arbitraryRecords: () =>
    fc.property(arbGeometry(), fc.array(arbPageRecord(), { maxLength: 4 }), (geometry, pages) => {
      try {
        const out = decodePageBatch({ type: 'pages', seq: 0, pages }, geometry);
        for (const p of out) if (p.index >= geometry.pageCount) violation(`page ${p.index} accepted beyond ${geometry.pageCount}`);
      } catch (e) {
        expectCode(e, PAGE_CODES, 'decodePageBatch');
      }
    }),
};

export const lz4Available = HAS_LZ4;

// ---------------------------------------------------------------- handshakes

const SECRET = new Uint8Array(32).fill(0x5a);

function expectHandshakeError(e: unknown, frame: Frame, where: string): void {
  if (frame.type === 'error') {
    const want = errorFromFrame(frame).code;
    const got = expectCode(e, KNOWN_CODES, where);
    if (got.code !== want) violation(`${where}: peer ERROR ${frame.code} surfaced as ${got.code}`);
    return;
  }
  expectCode(e, HANDSHAKE_CODES, where);
}

export const handshakeProperties = {
  /**
   * A server fed arbitrary frames (a HELLO among them, perhaps) never
   * completes without the client's proof, fails only with handshake codes,
   * and once failed refuses everything.
   */
  serverArbitraryFrames: () =>
    fc.property(fc.option(arbGeometry(), { nil: undefined }), fc.array(arbFrame(), { minLength: 1, maxLength: 5 }), (geometry, frames) => {
      const hs = new ServerHandshake({ secret: SECRET, ...(geometry ? { geometry } : {}) });
      let failed = false;
      for (const f of frames) {
        try {
          const step = hs.receive(f);
          if (failed) violation('a failed server handshake accepted a frame');
          if (step.result) violation('the server handshake completed without a valid client proof');
          for (const s of step.send) encodeFrame(s);
        } catch (e) {
          expectHandshakeError(e, f, 'ServerHandshake.receive');
          failed = true;
        }
      }
    }),

  /** The same for the client: never done without the server's proof. */
  clientArbitraryFrames: () =>
    fc.property(arbGeometry(), fc.array(arbFrame(), { minLength: 1, maxLength: 5 }), (geometry, frames) => {
      const hs = new ClientHandshake({ secret: SECRET, geometry, imageId: 'img', sessionId: 's' });
      hs.start();
      let failed = false;
      for (const f of frames) {
        try {
          const step = hs.receive(f);
          if (failed) violation('a failed client handshake accepted a frame');
          if (step.result) violation('the client handshake completed without a valid server proof');
        } catch (e) {
          expectHandshakeError(e, f, 'ClientHandshake.receive');
          failed = true;
        }
      }
    }),

  /**
   * An honest pair agrees; any frame changed in transit (re-encoded, so its
   * checksums are right) makes one side fail, never both succeed with
   * different views.
   */
  tamperedInTransit: () =>
    fc.property(
      arbGeometry(),
      fc.option(arbGeometry(), { nil: undefined }),
      nastyString(64),
      fc.nat({ max: 2 }),
      fc.option(fc.record({ pos: fc.nat(), value: u8 }), { nil: undefined }),
      fc.boolean(),
      (geometry, held, imageId, which, edit, sameSecret) => {
        const client = new ClientHandshake({ secret: SECRET, geometry, imageId, sessionId: 'sess' });
        const server = new ServerHandshake({
          secret: sameSecret ? SECRET : new Uint8Array(32).fill(0x33),
          ...(held ? { geometry: held, heldImageId: imageId } : {}),
        });
        const tamper = (f: Frame, i: number): Frame => {
          if (i !== which || edit === undefined) return f;
          const bytes = Buffer.from(encodeFrame(f));
          const pos = HEADER_BYTES + (edit.pos % Math.max(1, bytes.length - HEADER_BYTES));
          if (pos >= bytes.length || bytes[pos] === edit.value) return f;
          bytes[pos] = edit.value;
          const r = feed([reframe(bytes[1], bytes.subarray(HEADER_BYTES))], { maxFrameBytes: FUZZ_MAX_FRAME });
          return r.frames[0] ?? { type: 'error', code: 'TAMPERED', message: '' };
        };
        const tampered = edit !== undefined;
        let cResult;
        let sResult;
        try {
          const hello = tamper(client.start().send[0], 0);
          const s1 = server.receive(hello);
          const c1 = client.receive(tamper(s1.send[0], 1));
          const s2 = server.receive(tamper(c1.send[0], 2));
          sResult = s2.result;
          cResult = client.receive(s2.send[0]).result;
        } catch (e) {
          if (!(e instanceof PresyncError)) violation(`handshake threw ${String(e)}`);
          const ok = sameSecret && !tampered && (held === undefined || (held.pageSize === geometry.pageSize && held.pageCount === geometry.pageCount));
          if (ok) violation(`an honest handshake failed: ${e.code} ${e.message}`);
          return;
        }
        if (!sameSecret) violation('a handshake with different secrets succeeded');
        if (!cResult || !sResult) violation('handshake ended without results on both sides');
        if (JSON.stringify(cResult.geometry) !== JSON.stringify(sResult.geometry) || cResult.imageId !== sResult.imageId || cResult.capabilities !== sResult.capabilities) {
          violation('client and server finished with different views of the session');
        }
      },
    ),
};

// ---------------------------------------------------------------- digest runs

export const digestRunProperties = {
  /** The collector returns a table only for in-order contiguous chunks covering exactly pageCount, equal to their concatenation. */
  collector: () =>
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.array(fc.record({ first: fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: 45 })), n: fc.integer({ min: 0, max: 15 }), final: fc.boolean(), seed: u64 }), {
        maxLength: 8,
      }),
      (pageCount, spec) => {
        const col = new DigestRunCollector(pageCount);
        let next = 0;
        const model: bigint[] = [];
        let complete = false;
        for (const s of spec) {
          // first = -1 means "the right place": most chunks should be plausible.
          const first = s.first < 0 ? next : s.first;
          const run: DigestRun = { first, digests: BigUint64Array.from({ length: s.n }, (_, i) => (s.seed + BigInt(i)) & 0xffffffffffffffffn), final: s.final };
          const legal = !complete && first === next && first + s.n <= pageCount && (!s.final || first + s.n === pageCount);
          let table;
          try {
            table = col.add(run);
          } catch (e) {
            expectCode(e, new Set([ErrorCodes.PROTOCOL, ErrorCodes.PAGE_RANGE]), 'DigestRunCollector.add');
            if (legal) violation(`a legal chunk ${first}+${s.n} was refused`);
            return;
          }
          if (!legal) violation(`an illegal chunk ${first}+${s.n}${s.final ? ' final' : ''} was accepted (next ${next}, complete ${complete})`);
          model.push(...run.digests);
          next += s.n;
          if (s.final) {
            complete = true;
            if (!table || table.length !== pageCount || table.some((d, i) => d !== model[i])) violation('the completed table differs from its chunks');
          } else if (table) violation('a table was returned before the final chunk');
        }
      },
    ),
};

/** Every property with its share of a run's cases (shares sum to 1). */
export const ALL_PROPERTIES: ReadonlyArray<{ name: string; share: number; make: () => fc.IPropertyWithHooks<unknown> }> = [
  { name: 'decoder: arbitrary bytes', share: 0.15, make: decoderProperties.arbitraryBytes as () => fc.IPropertyWithHooks<unknown> },
  { name: 'decoder: arbitrary payloads behind valid headers', share: 0.2, make: decoderProperties.arbitraryPayloads as () => fc.IPropertyWithHooks<unknown> },
  { name: 'decoder: mutated valid frames', share: 0.25, make: decoderProperties.mutatedFrames as () => fc.IPropertyWithHooks<unknown> },
  { name: 'decoder: valid frames round-trip', share: 0.08, make: decoderProperties.roundTrip as () => fc.IPropertyWithHooks<unknown> },
  { name: 'decoder: oversize announcements', share: 0.02, make: decoderProperties.oversizeAnnounced as () => fc.IPropertyWithHooks<unknown> },
  { name: 'pages: batches against a geometry', share: 0.1, make: pageBatchProperties.decodeAgainstGeometry as () => fc.IPropertyWithHooks<unknown> },
  { name: 'pages: arbitrary records', share: 0.05, make: pageBatchProperties.arbitraryRecords as () => fc.IPropertyWithHooks<unknown> },
  { name: 'handshake: server fed arbitrary frames', share: 0.05, make: handshakeProperties.serverArbitraryFrames as () => fc.IPropertyWithHooks<unknown> },
  { name: 'handshake: client fed arbitrary frames', share: 0.03, make: handshakeProperties.clientArbitraryFrames as () => fc.IPropertyWithHooks<unknown> },
  { name: 'handshake: tampered in transit', share: 0.02, make: handshakeProperties.tamperedInTransit as () => fc.IPropertyWithHooks<unknown> },
  { name: 'digest runs: collector', share: 0.05, make: digestRunProperties.collector as () => fc.IPropertyWithHooks<unknown> },
];

