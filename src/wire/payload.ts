import { endianness } from 'node:os';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import { Reader, Writer, checkUint, encodeStr } from './bytes.ts';
import {
  FrameType,
  MAGIC,
  MAX_ERROR_CODE_BYTES,
  MAX_IMAGE_ID_BYTES,
  MAX_MESSAGE_BYTES,
  MAX_PAGE_SIZE,
  MAX_SESSION_ID_BYTES,
  MAX_LINEAGE_ID_BYTES,
  Capability,
  MAX_VERIFY_MISMATCHES,
  NONCE_BYTES,
  PAGE_RECORD_HEADER_BYTES,
  PAGES_PREFIX_BYTES,
  PHASES,
  PROOF_BYTES,
  PageEncoding,
  VERIFY_SUMMARY_BYTES,
  type FrameTypeCode,
  type PageEncodingCode,
} from './constants.ts';
import type { DigestRun, Frame, HelloFrame, PageRecord, VerifyResponseFrame } from './frames.ts';
import { layoutProblem, type SegmentSpec } from '../core/image-layout.ts';

/** Bytes of a segment id (a QEMU object id). */
const MAX_SEGMENT_ID_BYTES = 64;

/**
 * Frame payload (de)serialisation, one function pair per frame type. Decoding
 * is strict (no trailing bytes, reserved values refused, UTF-8 checked) so that
 * re-encoding a decoded frame gives back the exact bytes: the handshake proofs
 * rely on that.
 */

const LITTLE_ENDIAN_HOST = endianness() === 'LE';
const ERROR_CODE_RE = /^[A-Z0-9_]+$/;

function protocol(message: string): PresyncError {
  return new PresyncError(ErrorCodes.PROTOCOL, message);
}

function badArg(message: string): PresyncError {
  return new PresyncError(ErrorCodes.BAD_ARGUMENT, message);
}

export const TYPE_CODE: { readonly [K in Frame['type']]: FrameTypeCode } = {
  hello: FrameType.HELLO,
  challenge: FrameType.CHALLENGE,
  auth: FrameType.AUTH,
  welcome: FrameType.WELCOME,
  error: FrameType.ERROR,
  pages: FrameType.PAGES,
  ack: FrameType.ACK,
  have: FrameType.HAVE,
  phase: FrameType.PHASE,
  'verify-request': FrameType.VERIFY_REQUEST,
  'verify-response': FrameType.VERIFY_RESPONSE,
  'verify-summary': FrameType.VERIFY_SUMMARY,
  'verify-summary-response': FrameType.VERIFY_SUMMARY_RESPONSE,
  'device-state': FrameType.DEVICE_STATE,
  handover: FrameType.HANDOVER,
  'handover-done': FrameType.HANDOVER_DONE,
  abort: FrameType.ABORT,
  ping: FrameType.PING,
  pong: FrameType.PONG,
};

const KNOWN_TYPES = new Set<number>(Object.values(FrameType));

export function isKnownFrameType(code: number): code is FrameTypeCode {
  return KNOWN_TYPES.has(code);
}

function checkBytes(b: Uint8Array, n: number, field: string): void {
  if (!(b instanceof Uint8Array) || b.length !== n) throw badArg(`${field} must be ${n} bytes`);
}

function checkPageSize(pageSize: number, allowZero: boolean, what: string): void {
  if (allowZero && pageSize === 0) return;
  if (pageSize < 512 || pageSize > MAX_PAGE_SIZE || (pageSize & (pageSize - 1)) !== 0) {
    throw protocol(`${what}: page size ${pageSize} is not a power of two in 512..${MAX_PAGE_SIZE}`);
  }
}

function digestRunParts(run: DigestRun): Buffer[] {
  checkUint(run.first, 0xffffffff, 'first page');
  if (!(run.digests instanceof BigUint64Array)) throw badArg('digests must be a BigUint64Array');
  if (run.first + run.digests.length > 0x100000000) throw badArg('digest run passes page 2^32-1');
  const head = new Writer(9).u32(run.first, 'first page').u32(run.digests.length, 'digest count').bool(run.final).done();
  if (LITTLE_ENDIAN_HOST) {
    return [head, Buffer.from(run.digests.buffer, run.digests.byteOffset, run.digests.byteLength)];
  }
  const body = Buffer.allocUnsafe(run.digests.length * 8);
  for (let i = 0; i < run.digests.length; i++) body.writeBigUInt64LE(run.digests[i], i * 8);
  return [head, body];
}

function readDigestRun(r: Reader, geometry: Geometry | undefined, what: string): DigestRun {
  const first = r.u32('first page');
  const count = r.u32('digest count');
  const final = r.bool('final');
  if (first + count > 0x100000000) throw protocol(`${what}: digest run passes page 2^32-1`);
  if (geometry && first + count > geometry.pageCount) {
    throw new PresyncError(ErrorCodes.PAGE_RANGE, `${what}: pages ${first}..${first + count - 1} beyond page count ${geometry.pageCount}`);
  }
  if (r.remaining !== count * 8) throw protocol(`${what}: ${count} digests need ${count * 8} bytes, frame has ${r.remaining}`);
  const raw = r.bytes(count * 8, 'digests');
  // Copy into a fresh, 8-aligned buffer: the frame bytes may sit at any offset.
  const digests = new BigUint64Array(count);
  if (LITTLE_ENDIAN_HOST) {
    new Uint8Array(digests.buffer).set(raw);
  } else {
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < count; i++) digests[i] = v.getBigUint64(i * 8, true);
  }
  return { first, digests, final };
}

function checkVerifyResponse(f: Pick<VerifyResponseFrame, 'match' | 'mismatchCount' | 'mismatches'>, fail: (m: string) => PresyncError): void {
  const listed = f.mismatches.length;
  if (listed > MAX_VERIFY_MISMATCHES) throw fail(`verify-response lists ${listed} pages, limit ${MAX_VERIFY_MISMATCHES}`);
  if (f.match && (f.mismatchCount !== 0 || listed !== 0)) throw fail('verify-response says match but carries mismatches');
  if (!f.match && f.mismatchCount === 0) throw fail('verify-response says mismatch but counts none');
  if (listed > f.mismatchCount) throw fail(`verify-response lists ${listed} pages but counts ${f.mismatchCount}`);
  for (let i = 1; i < listed; i++) {
    if (f.mismatches[i] <= f.mismatches[i - 1]) throw fail('verify-response mismatches must be strictly ascending');
  }
}

/** A HELLO's segment list, checked and encoded: count u8, then per segment id str8 and pageCount u32. */
function encodeSegments(frame: HelloFrame): { ids: Uint8Array[]; pageCounts: number[]; bytes: number } {
  const segs = frame.segments ?? [];
  const why = layoutProblem(segs);
  if (why) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `hello segments: ${why}`);
  const sum = segs.reduce((n, s) => n + s.pageCount, 0);
  if (sum !== frame.pageCount) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `hello segments hold ${sum} pages, the image ${frame.pageCount}`);
  const ids = segs.map((s) => encodeStr(s.id, MAX_SEGMENT_ID_BYTES, 'segment id'));
  return { ids, pageCounts: segs.map((s) => s.pageCount), bytes: 1 + ids.reduce((n, id) => n + 1 + id.length + 4, 0) };
}

function decodeSegments(r: Reader, pageCount: number): SegmentSpec[] {
  const n = r.u8('segment count');
  const segs: SegmentSpec[] = [];
  for (let i = 0; i < n; i++) segs.push({ id: r.str8(MAX_SEGMENT_ID_BYTES, 'segment id'), pageCount: r.u32('segment pageCount') });
  const why = layoutProblem(segs);
  if (why) throw protocol(`hello segments: ${why}`);
  const sum = segs.reduce((k, s) => k + s.pageCount, 0);
  if (sum !== pageCount) throw protocol(`hello segments hold ${sum} pages, the image ${pageCount}`);
  return segs;
}

/**
 * Serialises a frame's payload. PAGES returns its page payloads as views (no
 * copy), so the caller can write the parts with writev.
 */
export function encodePayload(frame: Frame): Buffer[] {
  switch (frame.type) {
    case 'hello': {
      checkBytes(frame.nonce, NONCE_BYTES, 'hello nonce');
      const image = encodeStr(frame.imageId, MAX_IMAGE_ID_BYTES, 'imageId');
      const session = encodeStr(frame.sessionId, MAX_SESSION_ID_BYTES, 'sessionId');
      const lineage = (frame.capabilities & Capability.LINEAGE) !== 0 ? encodeStr(frame.lineageId ?? '', MAX_LINEAGE_ID_BYTES, 'lineageId') : undefined;
      const segments = (frame.capabilities & Capability.SEGMENTS) !== 0 ? encodeSegments(frame) : undefined;
      const w = new Writer(4 + 2 + 4 + 4 + 4 + NONCE_BYTES + 2 + image.length + 2 + session.length + (lineage ? 1 + lineage.length : 0) + (segments?.bytes ?? 0));
      w.u32(MAGIC, 'magic').u16(frame.version, 'version').u32(frame.capabilities, 'capabilities');
      w.u32(frame.pageSize, 'pageSize').u32(frame.pageCount, 'pageCount').bytes(frame.nonce);
      w.str(image, 2).str(session, 2);
      if (lineage) w.str(lineage, 1);
      if (segments) {
        w.u8(segments.ids.length, 'segment count');
        segments.ids.forEach((id, i) => w.str(id, 1).u32(segments.pageCounts[i], 'segment pageCount'));
      }
      return [w.done()];
    }
    case 'challenge': {
      checkBytes(frame.nonce, NONCE_BYTES, 'challenge nonce');
      checkBytes(frame.proof, PROOF_BYTES, 'challenge proof');
      const w = new Writer(2 + 4 + 4 + 4 + NONCE_BYTES + PROOF_BYTES);
      w.u16(frame.version, 'version').u32(frame.capabilities, 'capabilities');
      w.u32(frame.pageSize, 'pageSize').u32(frame.pageCount, 'pageCount').bytes(frame.nonce).bytes(frame.proof);
      return [w.done()];
    }
    case 'auth':
      checkBytes(frame.proof, PROOF_BYTES, 'auth proof');
      return [Buffer.from(frame.proof)];
    case 'welcome':
      return [new Writer(5).u32(frame.capabilities, 'capabilities').bool(frame.resume).done()];
    case 'error': {
      if (!ERROR_CODE_RE.test(frame.code)) throw badArg(`error code must match ${ERROR_CODE_RE}, got ${JSON.stringify(frame.code)}`);
      const code = encodeStr(frame.code, MAX_ERROR_CODE_BYTES, 'error code');
      const msg = encodeStr(frame.message, MAX_MESSAGE_BYTES, 'error message');
      return [new Writer(1 + code.length + 2 + msg.length).str(code, 1).str(msg, 2).done()];
    }
    case 'pages':
      return encodePagesPayload(frame.seq, frame.pages);
    case 'ack':
      return [new Writer(8).u64n(frame.seq, 'seq').done()];
    case 'have':
    case 'verify-request':
      return digestRunParts(frame);
    case 'verify-response': {
      checkVerifyResponse(frame, badArg);
      const w = new Writer(1 + 4 + 4 + frame.mismatches.length * 4);
      w.bool(frame.match).u32(frame.mismatchCount, 'mismatchCount').u32(frame.mismatches.length, 'listed');
      for (const p of frame.mismatches) w.u32(p, 'mismatch page');
      return [w.done()];
    }
    case 'verify-summary':
      checkBytes(frame.sha256, VERIFY_SUMMARY_BYTES, 'verify-summary sha256');
      return [new Writer(4).u32(frame.pageCount, 'pageCount').done(), Buffer.from(frame.sha256)];
    case 'verify-summary-response':
      return [new Writer(1).bool(frame.match).done()];
    case 'phase': {
      const i = PHASES.indexOf(frame.phase);
      if (i < 0) throw badArg(`unknown phase ${JSON.stringify(frame.phase)}`);
      return [new Writer(1).u8(i + 1, 'phase').done()];
    }
    case 'device-state': {
      checkUint(frame.totalLength, Number.MAX_SAFE_INTEGER, 'totalLength');
      checkUint(frame.offset, Number.MAX_SAFE_INTEGER, 'offset');
      if (frame.offset + frame.data.length > frame.totalLength) throw badArg('device-state chunk ends beyond totalLength');
      return [new Writer(16).u64n(frame.totalLength, 'totalLength').u64n(frame.offset, 'offset').done(), toBuffer(frame.data)];
    }
    case 'handover':
    case 'handover-done':
      return [];
    case 'abort': {
      const reason = encodeStr(frame.reason, MAX_MESSAGE_BYTES, 'abort reason');
      return [new Writer(2 + reason.length).str(reason, 2).done()];
    }
    case 'ping':
    case 'pong':
      return [new Writer(8).u64(frame.nonce, 'nonce').done()];
    default: {
      const never: never = frame;
      throw badArg(`cannot encode frame ${JSON.stringify((never as { type?: unknown }).type)}`);
    }
  }
}

function toBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function encodePagesPayload(seq: number, pages: readonly PageRecord[]): Buffer[] {
  // One allocation for the prefix and every record header; payloads stay where they are.
  const heads = new Writer(PAGES_PREFIX_BYTES + pages.length * PAGE_RECORD_HEADER_BYTES);
  heads.u64n(seq, 'seq').u32(pages.length, 'page count');
  const parts: Buffer[] = [heads.buf.subarray(0, PAGES_PREFIX_BYTES)];
  let at = PAGES_PREFIX_BYTES;
  for (const p of pages) {
    if (p.encoding === PageEncoding.ZERO ? p.payload.length !== 0 : p.payload.length === 0) {
      throw badArg(`page ${p.index}: encoding ${p.encoding} with a ${p.payload.length}-byte payload`);
    }
    if (!isKnownEncoding(p.encoding)) throw badArg(`page ${p.index}: unknown encoding ${p.encoding}`);
    heads.u32(p.index, 'page index').u64(p.digest, 'page digest').u8(p.encoding, 'encoding').u32(p.payload.length, 'payload length');
    parts.push(heads.buf.subarray(at, at + PAGE_RECORD_HEADER_BYTES));
    at += PAGE_RECORD_HEADER_BYTES;
    if (p.payload.length > 0) parts.push(toBuffer(p.payload));
  }
  heads.done();
  return parts;
}

export function isKnownEncoding(e: number): e is PageEncodingCode {
  return Number.isInteger(e) && e >= PageEncoding.ZERO && e <= PageEncoding.ZSTD;
}

function readPages(r: Reader, geometry: Geometry | undefined): Frame {
  const seq = r.u64n('seq');
  const count = r.u32('page count');
  if (count * PAGE_RECORD_HEADER_BYTES > r.remaining) throw protocol(`pages: ${count} records cannot fit in ${r.remaining} bytes`);
  const pages: PageRecord[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const index = r.u32('page index');
    const digest = r.u64('page digest');
    const encoding = r.u8('encoding');
    const len = r.u32('payload length');
    if (!isKnownEncoding(encoding)) throw protocol(`pages: page ${index} has unknown encoding ${encoding}`);
    if (encoding === PageEncoding.ZERO ? len !== 0 : len === 0) throw protocol(`pages: page ${index} encoding ${encoding} with ${len}-byte payload`);
    if (geometry) {
      if (index >= geometry.pageCount) throw new PresyncError(ErrorCodes.PAGE_RANGE, `pages: page ${index} beyond page count ${geometry.pageCount}`);
      if (encoding === PageEncoding.RAW && len !== geometry.pageSize) throw protocol(`pages: raw page ${index} is ${len} bytes, page size ${geometry.pageSize}`);
      if (encoding > PageEncoding.RAW && len >= geometry.pageSize) throw protocol(`pages: compressed page ${index} is ${len} bytes, not below page size ${geometry.pageSize}`);
    }
    pages[i] = { index, digest, encoding, payload: r.bytes(len, 'page payload') };
  }
  return { type: 'pages', seq, pages };
}

/**
 * Parses a payload whose frame CRC has already been checked. With `geometry`
 * (known after the handshake), page indices and payload sizes are checked too.
 */
export function decodePayload(type: FrameTypeCode, payload: Uint8Array, geometry?: Geometry): Frame {
  const r = new Reader(payload, frameName(type));
  let f: Frame;
  switch (type) {
    case FrameType.HELLO: {
      const magic = r.u32('magic');
      if (magic !== MAGIC) throw protocol(`hello: bad magic 0x${magic.toString(16)}; the peer does not speak presync`);
      const version = r.u16('version');
      const capabilities = r.u32('capabilities');
      const pageSize = r.u32('pageSize');
      const pageCount = r.u32('pageCount');
      checkPageSize(pageSize, false, 'hello');
      if (pageCount === 0) throw protocol('hello: page count is 0');
      const nonce = r.copy(NONCE_BYTES, 'nonce');
      const imageId = r.str16(MAX_IMAGE_ID_BYTES, 'imageId');
      const sessionId = r.str16(MAX_SESSION_ID_BYTES, 'sessionId');
      f = { type: 'hello', version, capabilities, pageSize, pageCount, imageId, sessionId, nonce };
      if ((capabilities & Capability.LINEAGE) !== 0) f = { ...f, lineageId: r.str8(MAX_LINEAGE_ID_BYTES, 'lineageId') };
      if ((capabilities & Capability.SEGMENTS) !== 0) f = { ...f, segments: decodeSegments(r, pageCount) };
      break;
    }
    case FrameType.CHALLENGE: {
      const version = r.u16('version');
      const capabilities = r.u32('capabilities');
      const pageSize = r.u32('pageSize');
      const pageCount = r.u32('pageCount');
      checkPageSize(pageSize, true, 'challenge');
      if ((pageSize === 0) !== (pageCount === 0)) throw protocol('challenge: page size and count must both be 0 or both be set');
      const nonce = r.copy(NONCE_BYTES, 'nonce');
      const proof = r.copy(PROOF_BYTES, 'proof');
      f = { type: 'challenge', version, capabilities, pageSize, pageCount, nonce, proof };
      break;
    }
    case FrameType.AUTH:
      f = { type: 'auth', proof: r.copy(PROOF_BYTES, 'proof') };
      break;
    case FrameType.WELCOME:
      f = { type: 'welcome', capabilities: r.u32('capabilities'), resume: r.bool('resume') };
      break;
    case FrameType.ERROR: {
      const code = r.str8(MAX_ERROR_CODE_BYTES, 'code');
      if (!ERROR_CODE_RE.test(code)) throw protocol(`error: code ${JSON.stringify(code)} is not [A-Z0-9_]+`);
      f = { type: 'error', code, message: r.str16(MAX_MESSAGE_BYTES, 'message') };
      break;
    }
    case FrameType.PAGES:
      f = readPages(r, geometry);
      break;
    case FrameType.ACK:
      f = { type: 'ack', seq: r.u64n('seq') };
      break;
    case FrameType.HAVE:
      f = { type: 'have', ...readDigestRun(r, geometry, 'have') };
      break;
    case FrameType.VERIFY_REQUEST:
      f = { type: 'verify-request', ...readDigestRun(r, geometry, 'verify-request') };
      break;
    case FrameType.VERIFY_RESPONSE: {
      const match = r.bool('match');
      const mismatchCount = r.u32('mismatchCount');
      const listed = r.u32('listed');
      if (listed > MAX_VERIFY_MISMATCHES) throw protocol(`verify-response lists ${listed} pages, limit ${MAX_VERIFY_MISMATCHES}`);
      const mismatches = new Uint32Array(listed);
      for (let i = 0; i < listed; i++) mismatches[i] = r.u32('mismatch page');
      const vr: VerifyResponseFrame = { type: 'verify-response', match, mismatchCount, mismatches };
      checkVerifyResponse(vr, protocol);
      f = vr;
      break;
    }
    case FrameType.VERIFY_SUMMARY: {
      // A summary of another page count is not an error here: it simply never matches.
      const pageCount = r.u32('pageCount');
      f = { type: 'verify-summary', pageCount, sha256: r.copy(VERIFY_SUMMARY_BYTES, 'sha256') };
      break;
    }
    case FrameType.VERIFY_SUMMARY_RESPONSE:
      f = { type: 'verify-summary-response', match: r.bool('match') };
      break;
    case FrameType.PHASE: {
      const p = r.u8('phase');
      const phase = PHASES[p - 1];
      if (phase === undefined) throw protocol(`phase: unknown phase ${p}`);
      f = { type: 'phase', phase };
      break;
    }
    case FrameType.DEVICE_STATE: {
      const totalLength = r.u64n('totalLength');
      const offset = r.u64n('offset');
      const data = r.rest();
      if (offset + data.length > totalLength) throw protocol(`device-state: chunk at ${offset}+${data.length} ends beyond total ${totalLength}`);
      f = { type: 'device-state', totalLength, offset, data };
      break;
    }
    case FrameType.HANDOVER:
      f = { type: 'handover' };
      break;
    case FrameType.HANDOVER_DONE:
      f = { type: 'handover-done' };
      break;
    case FrameType.ABORT:
      f = { type: 'abort', reason: r.str16(MAX_MESSAGE_BYTES, 'reason') };
      break;
    case FrameType.PING:
      f = { type: 'ping', nonce: r.u64('nonce') };
      break;
    case FrameType.PONG:
      f = { type: 'pong', nonce: r.u64('nonce') };
      break;
    default:
      throw protocol(`unknown frame type 0x${(type as number).toString(16)}`);
  }
  r.end();
  return f;
}

function frameName(type: number): string {
  for (const [k, v] of Object.entries(TYPE_CODE)) if (v === type) return k;
  return `type 0x${type.toString(16)}`;
}
