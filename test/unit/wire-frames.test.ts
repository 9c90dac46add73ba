import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PresyncError } from '../../src/core/errors.ts';
import { Rng } from '../../src/core/rng.ts';
import { crc32 } from '../../src/wire/crc32.ts';
import { FrameDecoder } from '../../src/wire/decoder.ts';
import { DigestRunCollector, diffDigests, digestRunFrames, digestTableSummary, summaryMatches, verifyResponse, verifySummary } from '../../src/wire/digest-runs.ts';
import { createHash } from 'node:crypto';
import { encodeFrame, encodeFrameParts, frameSize } from '../../src/wire/framing.ts';
import type { Frame } from '../../src/wire/frames.ts';
import { Capability, FrameType, HEADER_BYTES, MIN_MAX_FRAME_BYTES, PageEncoding } from '../../src/wire/constants.ts';

const bytes = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);

function samples(): Frame[] {
  return [
    {
      type: 'hello',
      version: 1,
      capabilities: Capability.DEFLATE | Capability.RESUME,
      pageSize: 4096,
      pageCount: 65536,
      imageId: 'vm-42/ram0 ✓',
      sessionId: 'sess-0001',
      nonce: bytes(32, 7),
    },
    {
      type: 'hello',
      version: 1,
      capabilities: Capability.RESUME | Capability.LINEAGE | Capability.SEGMENTS,
      pageSize: 4096,
      pageCount: 3 + 65536 + 1,
      imageId: 'vm-42-numa',
      sessionId: 'sess-0002',
      nonce: bytes(32, 8),
      lineageId: 'ab'.repeat(16),
      segments: [
        { id: 'm0', pageCount: 3 },
        { id: 'ram-node1.x_y', pageCount: 65536 },
        { id: 'm2', pageCount: 1 },
      ],
    },
    { type: 'challenge', version: 1, capabilities: Capability.LZ4, pageSize: 0, pageCount: 0, nonce: bytes(32, 1), proof: bytes(32, 2) },
    { type: 'challenge', version: 1, capabilities: 0, pageSize: 4096, pageCount: 10, nonce: bytes(32, 3), proof: bytes(32, 4) },
    { type: 'auth', proof: bytes(32, 9) },
    { type: 'welcome', capabilities: Capability.DEFLATE, resume: true },
    { type: 'error', code: 'PRESYNC_ERR_GEOMETRY', message: 'pages differ: 4096 vs 8192 — fix it' },
    {
      type: 'pages',
      seq: 2 ** 40 + 3,
      pages: [
        { index: 0, digest: 0xffffffffffffffffn, encoding: PageEncoding.ZERO, payload: new Uint8Array(0) },
        { index: 7, digest: 123n, encoding: PageEncoding.RAW, payload: bytes(64, 0xab) },
        { index: 0xfffffffe, digest: 1n, encoding: PageEncoding.DEFLATE, payload: bytes(5, 1) },
      ],
    },
    { type: 'pages', seq: 0, pages: [] },
    { type: 'ack', seq: Number.MAX_SAFE_INTEGER },
    { type: 'have', first: 0, digests: BigUint64Array.from([1n, 2n, 0xfedcba9876543210n]), final: false },
    { type: 'have', first: 3, digests: new BigUint64Array(0), final: true },
    { type: 'verify-request', first: 100, digests: BigUint64Array.from([5n]), final: true },
    { type: 'verify-response', match: true, mismatchCount: 0, mismatches: new Uint32Array(0) },
    { type: 'verify-response', match: false, mismatchCount: 9000, mismatches: Uint32Array.from([1, 5, 4000]) },
    { type: 'verify-summary', pageCount: 65536, sha256: bytes(32, 0xc3) },
    { type: 'verify-summary-response', match: true },
    { type: 'verify-summary-response', match: false },
    { type: 'phase', phase: 'presync' },
    { type: 'phase', phase: 'final-copy' },
    { type: 'phase', phase: 'handover' },
    { type: 'device-state', totalLength: 100, offset: 40, data: bytes(60, 0x5a) },
    { type: 'handover' },
    { type: 'handover-done' },
    { type: 'abort', reason: 'operator cancelled' },
    { type: 'ping', nonce: 0x0123456789abcdefn },
    { type: 'pong', nonce: 0n },
  ];
}

/** Compares frames field by field, treating typed arrays and Buffers by content. */
function norm(v: unknown): unknown {
  if (typeof v === 'bigint') return `${v}n`;
  if (ArrayBuffer.isView(v)) return `${v.constructor === Buffer ? 'Uint8Array' : v.constructor.name}:${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')}`;
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

function decodeAll(chunks: Uint8Array[]): Frame[] {
  const d = new FrameDecoder();
  const out: Frame[] = [];
  for (const c of chunks) out.push(...d.push(c));
  d.end();
  return out;
}

function expectError(fn: () => unknown, code: string): PresyncError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PresyncError, `expected PresyncError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code}, nothing thrown`);
}

/** A frame with valid CRCs around an arbitrary payload, for hostile-peer tests. */
function rawFrame(type: number, payload: Uint8Array, opts: { version?: number; flags?: number; length?: number } = {}): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt8(opts.version ?? 1, 0);
  h.writeUInt8(type, 1);
  h.writeUInt16LE(opts.flags ?? 0, 2);
  h.writeUInt32LE(opts.length ?? payload.length, 4);
  h.writeUInt32LE(crc32(payload), 8);
  h.writeUInt32LE(crc32(h.subarray(0, 12)), 12);
  return Buffer.concat([h, payload]);
}

describe('frame round trip', () => {
  it('every frame type survives encode → decode unchanged', () => {
    for (const f of samples()) {
      const [back] = decodeAll([encodeFrame(f)]);
      assert.deepEqual(norm(back), norm(f), f.type);
      assert.equal(frameSize(f), encodeFrame(f).length);
    }
  });

  it('encodeFrameParts references page payloads instead of copying them', () => {
    const payload = bytes(64, 0xab);
    const parts = encodeFrameParts({ type: 'pages', seq: 1, pages: [{ index: 1, digest: 2n, encoding: PageEncoding.RAW, payload }] });
    assert.ok(parts.some((p) => p.buffer === payload.buffer));
  });

  it('a stream of all frames decodes identically when split at every byte boundary', () => {
    const frames = samples();
    const stream = Buffer.concat(frames.map((f) => encodeFrame(f)));
    const want = frames.map(norm);
    for (let cut = 0; cut <= stream.length; cut++) {
      const got = decodeAll([stream.subarray(0, cut), stream.subarray(cut)]).map(norm);
      assert.deepEqual(got, want, `split at ${cut}`);
    }
  });

  it('decodes identically when fed one byte at a time, and from one chunk', () => {
    const frames = samples();
    const stream = Buffer.concat(frames.map((f) => encodeFrame(f)));
    const want = frames.map(norm);
    const single: Uint8Array[] = [];
    for (let i = 0; i < stream.length; i++) single.push(stream.subarray(i, i + 1));
    assert.deepEqual(decodeAll(single).map(norm), want);
    assert.deepEqual(decodeAll([stream]).map(norm), want);
  });

  it('every frame split at every boundary of itself decodes to itself', () => {
    for (const f of samples()) {
      const buf = encodeFrame(f);
      for (let cut = 1; cut < buf.length; cut++) {
        const d = new FrameDecoder();
        assert.deepEqual(d.push(buf.subarray(0, cut)), []);
        const got = d.push(buf.subarray(cut));
        assert.equal(got.length, 1);
        assert.deepEqual(norm(got[0]), norm(f));
      }
    }
  });
});

describe('decoder rejects bad input', () => {
  it('a corrupted byte anywhere in any frame is a CHECKSUM error', () => {
    for (const f of samples()) {
      const good = encodeFrame(f);
      for (let i = 0; i < good.length; i++) {
        for (const mask of [0x01, 0x80, 0xff]) {
          const bad = Buffer.from(good);
          bad[i] ^= mask;
          expectError(() => decodeAll([bad]), 'PRESYNC_ERR_CHECKSUM');
        }
      }
    }
  });

  it('an oversized length prefix is refused from the header alone, before buffering', () => {
    const d = new FrameDecoder({ maxFrameBytes: MIN_MAX_FRAME_BYTES });
    const header = rawFrame(FrameType.PAGES, new Uint8Array(0), { length: 0xfffffff0 }).subarray(0, HEADER_BYTES);
    expectError(() => d.push(header), 'PRESYNC_ERR_FRAME_TOO_LARGE');
    assert.equal(d.bufferedBytes, 0);
    const d2 = new FrameDecoder({ maxFrameBytes: MIN_MAX_FRAME_BYTES });
    const justOver = rawFrame(FrameType.DEVICE_STATE, new Uint8Array(0), { length: MIN_MAX_FRAME_BYTES - HEADER_BYTES + 1 });
    expectError(() => d2.push(justOver), 'PRESYNC_ERR_FRAME_TOO_LARGE');
  });

  it('the limit is inclusive: a frame of exactly maxFrameBytes passes', () => {
    const max = MIN_MAX_FRAME_BYTES;
    const f: Frame = { type: 'device-state', totalLength: 1 << 20, offset: 0, data: bytes(max - HEADER_BYTES - 16, 3) };
    const buf = encodeFrame(f, { maxFrameBytes: max });
    assert.equal(buf.length, max);
    assert.equal(new FrameDecoder({ maxFrameBytes: max }).push(buf).length, 1);
    expectError(() => encodeFrame({ ...f, data: bytes(max - HEADER_BYTES - 15, 3) }, { maxFrameBytes: max }), 'PRESYNC_ERR_FRAME_TOO_LARGE');
  });

  it('a wrong version is a VERSION error; unknown type, flags or trailing bytes are PROTOCOL', () => {
    expectError(() => decodeAll([rawFrame(FrameType.PING, bytes(8, 0), { version: 2 })]), 'PRESYNC_ERR_VERSION');
    expectError(() => decodeAll([rawFrame(0x7f, bytes(8, 0))]), 'PRESYNC_ERR_PROTOCOL');
    expectError(() => decodeAll([rawFrame(FrameType.PING, bytes(8, 0), { flags: 1 })]), 'PRESYNC_ERR_PROTOCOL');
    expectError(() => decodeAll([rawFrame(FrameType.PING, bytes(9, 0))]), 'PRESYNC_ERR_PROTOCOL');
    expectError(() => decodeAll([rawFrame(FrameType.PING, bytes(7, 0))]), 'PRESYNC_ERR_PROTOCOL');
    expectError(() => decodeAll([rawFrame(FrameType.PHASE, Uint8Array.of(9))]), 'PRESYNC_ERR_PROTOCOL');
    expectError(() => decodeAll([rawFrame(FrameType.WELCOME, Uint8Array.of(0, 0, 0, 0, 2))]), 'PRESYNC_ERR_PROTOCOL');
    expectError(() => decodeAll([rawFrame(FrameType.ACK, Buffer.from('ffffffffffffffff', 'hex'))]), 'PRESYNC_ERR_PROTOCOL');
  });

  it('a HELLO segment layout that does not add up, repeats an id, is empty, truncated or followed by more is PROTOCOL', () => {
    const f: Frame = {
      type: 'hello', version: 1, capabilities: Capability.SEGMENTS, pageSize: 4096, pageCount: 4, imageId: 'i', sessionId: 's', nonce: bytes(32, 1),
      segments: [{ id: 'm0', pageCount: 3 }, { id: 'm1', pageCount: 1 }],
    };
    const good = Buffer.from(encodeFrame(f).subarray(HEADER_BYTES));
    assert.equal(decodeAll([rawFrame(FrameType.HELLO, good)]).length, 1);
    // The tail: count u8, then (len u8, id, pageCount u32) per segment.
    const tail = 1 + (1 + 2 + 4) * 2;
    const head = good.subarray(0, good.length - tail);
    const sumOff = Buffer.from(good);
    sumOff.writeUInt32LE(2, sumOff.length - 4);
    const dup = Buffer.from(good);
    dup[dup.length - 5] = '0'.charCodeAt(0);
    const tooBig = Buffer.from(good);
    tooBig.writeUInt32LE(0xffffffff, tooBig.length - 4);
    for (const [what, payload] of [
      ['pages not adding up', sumOff],
      ['a repeated id', dup],
      ['a segment bigger than the image', tooBig],
      ['no segment', Buffer.concat([head, Uint8Array.of(0)])],
      ['truncated', good.subarray(0, good.length - 1)],
      ['a trailing byte', Buffer.concat([good, Uint8Array.of(0)])],
      ['the bit without a list', head],
    ] as const) {
      const e = expectError(() => decodeAll([rawFrame(FrameType.HELLO, payload)]), 'PRESYNC_ERR_PROTOCOL');
      assert.ok(e.message.length > 0, what);
    }
    // A sender never builds one either.
    expectError(() => encodeFrame({ ...f, segments: [{ id: 'm0', pageCount: 3 }] }), 'PRESYNC_ERR_BAD_ARGUMENT');
    expectError(() => encodeFrame({ ...f, segments: [{ id: 'm0', pageCount: 2 }, { id: 'm0', pageCount: 2 }] }), 'PRESYNC_ERR_BAD_ARGUMENT');
  });

  it('refuses bad magic, invalid UTF-8 and over-long strings', () => {
    const hello = encodeFrame(samples()[0]).subarray(HEADER_BYTES);
    const badMagic = Buffer.from(hello);
    badMagic[0] ^= 1;
    expectError(() => decodeAll([rawFrame(FrameType.HELLO, badMagic)]), 'PRESYNC_ERR_PROTOCOL');
    const abortBad = Buffer.from([2, 0, 0xc3, 0x28]);
    expectError(() => decodeAll([rawFrame(FrameType.ABORT, abortBad)]), 'PRESYNC_ERR_PROTOCOL');
    const long = Buffer.alloc(2 + 2000, 0x41);
    long.writeUInt16LE(2000, 0);
    expectError(() => decodeAll([rawFrame(FrameType.ABORT, long)]), 'PRESYNC_ERR_PROTOCOL');
  });

  it('with geometry set, page and digest-run indices beyond the image are PAGE_RANGE', () => {
    const geometry = { pageSize: 4096, pageCount: 8 };
    const pages: Frame = { type: 'pages', seq: 1, pages: [{ index: 8, digest: 0n, encoding: PageEncoding.ZERO, payload: new Uint8Array(0) }] };
    expectError(() => new FrameDecoder({ geometry }).push(encodeFrame(pages)), 'PRESYNC_ERR_PAGE_RANGE');
    const have: Frame = { type: 'have', first: 6, digests: new BigUint64Array(3), final: true };
    expectError(() => new FrameDecoder({ geometry }).push(encodeFrame(have)), 'PRESYNC_ERR_PAGE_RANGE');
    const d = new FrameDecoder();
    assert.equal(d.push(encodeFrame(pages)).length, 1, 'without geometry the frame is structurally fine');
    d.setGeometry(geometry);
    expectError(() => d.push(encodeFrame(pages)), 'PRESYNC_ERR_PAGE_RANGE');
  });

  it('stays failed after an error, even when valid frames follow', () => {
    const d = new FrameDecoder();
    const bad = Buffer.from(encodeFrame({ type: 'ping', nonce: 1n }));
    bad[HEADER_BYTES] ^= 1;
    const first = expectError(() => d.push(bad), 'PRESYNC_ERR_CHECKSUM');
    assert.throws(() => d.push(encodeFrame({ type: 'ping', nonce: 2n })), (e) => e === first);
    assert.equal(d.failed, first);
  });

  it('end() inside a frame is a CONNECTION error', () => {
    const d = new FrameDecoder();
    d.push(encodeFrame({ type: 'ping', nonce: 1n }).subarray(0, 5));
    expectError(() => d.end(), 'PRESYNC_ERR_CONNECTION');
  });

  it('random bytes only ever raise PresyncError with a wire code', () => {
    const rng = new Rng(20240601);
    const allowed = new Set(['PRESYNC_ERR_CHECKSUM', 'PRESYNC_ERR_VERSION', 'PRESYNC_ERR_FRAME_TOO_LARGE', 'PRESYNC_ERR_PROTOCOL', 'PRESYNC_ERR_PAGE_RANGE']);
    const types = Object.values(FrameType);
    const geometry = { pageSize: 4096, pageCount: 1000 };
    const check = (feed: () => void): void => {
      try {
        feed();
      } catch (e) {
        assert.ok(e instanceof PresyncError, `non-PresyncError: ${String(e)}`);
        assert.ok(allowed.has(e.code), e.code);
      }
    };
    const randBuf = (n: number): Buffer => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(rng.next() * 256);
      return b;
    };
    for (let i = 0; i < 3000; i++) {
      const n = Math.floor(rng.next() * 300);
      // Plain noise: nearly always stopped by the header CRC.
      check(() => new FrameDecoder().push(randBuf(n)));
      // Noise with valid CRCs, so the payload parsers see it.
      const type = types[i % types.length];
      check(() => new FrameDecoder({ geometry: i % 2 ? geometry : undefined }).push(rawFrame(type, randBuf(n))));
      // A valid frame with one field mutated and CRCs recomputed.
      const f = samples()[i % samples().length];
      const payload = Buffer.from(encodeFrame(f).subarray(HEADER_BYTES));
      if (payload.length > 0) payload[Math.floor(rng.next() * payload.length)] = Math.floor(rng.next() * 256);
      check(() => new FrameDecoder({ geometry: i % 2 ? geometry : undefined }).push(rawFrame(encodeFrame(f)[1], payload)));
    }
  });
});

describe('encoder refuses frames it must not send', () => {
  it('checks field ranges and string limits', () => {
    expectError(() => encodeFrame({ type: 'ack', seq: -1 }), 'PRESYNC_ERR_BAD_ARGUMENT');
    expectError(() => encodeFrame({ type: 'abort', reason: 'x'.repeat(1025) }), 'PRESYNC_ERR_BAD_ARGUMENT');
    expectError(() => encodeFrame({ type: 'error', code: 'lower case', message: '' }), 'PRESYNC_ERR_BAD_ARGUMENT');
    expectError(
      () => encodeFrame({ type: 'pages', seq: 1, pages: [{ index: 1, digest: 0n, encoding: PageEncoding.ZERO, payload: bytes(1, 1) }] }),
      'PRESYNC_ERR_BAD_ARGUMENT',
    );
    expectError(
      () => encodeFrame({ type: 'verify-response', match: true, mismatchCount: 1, mismatches: new Uint32Array(0) }),
      'PRESYNC_ERR_BAD_ARGUMENT',
    );
  });
});

describe('digest runs', () => {
  it('chunks a digest table to fit the frame limit and reassembles it', () => {
    const table = new BigUint64Array(20_000);
    for (let i = 0; i < table.length; i++) table[i] = BigInt(i) * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn;
    const frames = digestRunFrames('have', table, { maxFrameBytes: MIN_MAX_FRAME_BYTES });
    assert.ok(frames.length > 1);
    const collector = new DigestRunCollector(table.length);
    const d = new FrameDecoder({ maxFrameBytes: MIN_MAX_FRAME_BYTES });
    let result: BigUint64Array | undefined;
    for (const f of frames) {
      const buf = encodeFrame(f, { maxFrameBytes: MIN_MAX_FRAME_BYTES });
      for (const back of d.push(buf)) {
        assert.equal(back.type, 'have');
        if (back.type === 'have') result = collector.add(back);
      }
    }
    assert.deepEqual(result, table);
  });

  it('the collector refuses gaps, overruns and chunks after the final one', () => {
    const c = new DigestRunCollector(4);
    expectError(() => c.add({ first: 1, digests: new BigUint64Array(1), final: false }), 'PRESYNC_ERR_PROTOCOL');
    expectError(() => new DigestRunCollector(4).add({ first: 0, digests: new BigUint64Array(3), final: true }), 'PRESYNC_ERR_PROTOCOL');
    expectError(() => new DigestRunCollector(4).add({ first: 0, digests: new BigUint64Array(5), final: true }), 'PRESYNC_ERR_PAGE_RANGE');
    const done = new DigestRunCollector(1);
    done.add({ first: 0, digests: new BigUint64Array(1), final: true });
    expectError(() => done.add({ first: 1, digests: new BigUint64Array(0), final: true }), 'PRESYNC_ERR_PROTOCOL');
  });

  it('the verify summary is SHA-256 of the table as u64 little-endian; one changed digest changes it', () => {
    const t = BigUint64Array.from([1n, 0xfedcba9876543210n, 0n, 42n]);
    const le = Buffer.alloc(32);
    t.forEach((d, i) => le.writeBigUInt64LE(d, i * 8));
    assert.equal(Buffer.from(digestTableSummary(t)).toString('hex'), createHash('sha256').update(le).digest('hex'));
    const f = verifySummary(t);
    assert.equal(f.pageCount, 4);
    assert.equal(summaryMatches(f, t.slice()), true);
    const u = t.slice();
    u[3] = 43n;
    assert.equal(summaryMatches(f, u), false);
    assert.equal(summaryMatches(f, t.subarray(0, 3)), false, 'a table of another length never matches');
    // A view into a larger table hashes only its own pages.
    const big = new BigUint64Array(6);
    big.set(t, 1);
    assert.equal(summaryMatches(f, big.subarray(1, 5)), true);
  });

  it('verify lists mismatching pages, bounded', () => {
    const a = new BigUint64Array(10_000);
    const b = a.slice();
    assert.equal(verifyResponse(diffDigests(a, b)).match, true);
    for (let i = 0; i < 5000; i++) b[i * 2] = 1n;
    const r = verifyResponse(diffDigests(a, b));
    assert.equal(r.match, false);
    assert.equal(r.mismatchCount, 5000);
    assert.equal(r.mismatches.length, 4096);
    assert.equal(r.mismatches[1], 2);
    assert.equal(decodeAll([encodeFrame(r)]).length, 1);
  });
});
