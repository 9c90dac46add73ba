import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { before, describe, it } from 'node:test';
import { PresyncError } from '../../src/core/errors.ts';
import { PageEncoding } from '../../src/wire/constants.ts';
import { FrameDecoder } from '../../src/wire/decoder.ts';
import { digestPage, initDigest, zeroPageDigest } from '../../src/native/page-digest.ts';
import { encodeFrame } from '../../src/wire/framing.ts';
import type { PageRecord, PagesFrame } from '../../src/wire/frames.ts';
import { deflateCodec, lz4Codec } from '../../src/wire/page-codecs.ts';
import { applyPageBatch, decodePage, encodePage, encodePages, maxPagesPerFrame, pagesFrame, pagesFrameBytes } from '../../src/wire/pages.ts';

const PS = 4096;
const geometry = { pageSize: PS, pageCount: 16 };

function expectError(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PresyncError, `expected PresyncError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

/** Page 0 zero, 1 random (incompressible), 2 text-like (compressible), 3 nearly zero. */
function sourceImage(): Uint8Array {
  const img = new Uint8Array(PS * geometry.pageCount);
  img.set(randomBytes(PS), PS);
  img.set(Buffer.from('presync page '.repeat(400)).subarray(0, PS), 2 * PS);
  img[3 * PS + 100] = 1;
  for (let p = 4; p < geometry.pageCount; p++) img.set(randomBytes(64), p * PS + (p % 7) * 100);
  return img;
}

/** Round trip through bytes, as the target would receive it. */
function overWire(frame: PagesFrame): PagesFrame {
  const [back] = new FrameDecoder({ geometry }).push(encodeFrame(frame));
  assert.equal(back.type, 'pages');
  return back as PagesFrame;
}

describe('page batches', () => {
  before(() => initDigest());

  const codecs = ['none', 'deflate', ...(lz4Codec() ? ['lz4' as const] : [])] as const;
  for (const codec of codecs) {
    it(`codec ${codec}: the target image equals the source after applying the batch`, () => {
      const src = sourceImage();
      const all = Array.from({ length: geometry.pageCount }, (_, i) => i);
      const recs = encodePages(src, all, { pageSize: PS, codec });
      assert.equal(recs[0].encoding, PageEncoding.ZERO);
      assert.equal(recs[0].payload.length, 0);
      assert.equal(recs[1].encoding, PageEncoding.RAW, 'random page is not compressed: it would not shrink');
      if (codec !== 'none') assert.notEqual(recs[2].encoding, PageEncoding.RAW);
      for (const r of recs) if (r.encoding > PageEncoding.RAW) assert.ok(r.payload.length < PS);
      const target = randomBytes(src.length);
      const applied = applyPageBatch(overWire(pagesFrame(1, recs)), geometry, target);
      assert.equal(applied.length, geometry.pageCount);
      assert.ok(Buffer.from(target).equals(Buffer.from(src)));
      for (const p of applied) assert.equal(p.digest, digestPage(src.subarray(p.index * PS, (p.index + 1) * PS)));
    });
  }

  it('raw pages are snapshotted: writes after encoding do not corrupt the record', () => {
    const src = sourceImage();
    const [rec] = encodePages(src, [1], { pageSize: PS });
    const want = Buffer.from(src.subarray(PS, 2 * PS));
    src[PS + 5] ^= 0xff;
    const page = decodePage(rec, geometry);
    assert.ok(Buffer.from(page.data ?? []).equals(want));
  });

  it('a page index beyond the image is PAGE_RANGE', () => {
    const rec: PageRecord = { index: 16, digest: zeroPageDigest(PS), encoding: PageEncoding.ZERO, payload: new Uint8Array(0) };
    expectError(() => decodePage(rec, geometry), 'PRESYNC_ERR_PAGE_RANGE');
    expectError(() => new FrameDecoder({ geometry }).push(encodeFrame(pagesFrame(1, [rec]))), 'PRESYNC_ERR_PAGE_RANGE');
  });

  it('a digest mismatch is CHECKSUM and leaves the image untouched (batch is all-or-nothing)', () => {
    const src = sourceImage();
    const recs = encodePages(src, [1, 2, 3], { pageSize: PS, codec: 'deflate' });
    const tampered: PageRecord[] = [recs[0], recs[1], { ...recs[2], digest: recs[2].digest ^ 1n }];
    const target = new Uint8Array(src.length);
    expectError(() => applyPageBatch(overWire(pagesFrame(2, tampered)), geometry, target), 'PRESYNC_ERR_CHECKSUM');
    assert.ok(target.every((b) => b === 0));
    // Same payload, wrong content: a raw page whose bytes changed after the digest was taken.
    const raw = { ...recs[0], payload: Uint8Array.from(recs[0].payload) };
    raw.payload[0] ^= 1;
    expectError(() => decodePage(raw, geometry), 'PRESYNC_ERR_CHECKSUM');
    // A zero page must carry the zero-page digest.
    expectError(() => decodePage({ index: 0, digest: 5n, encoding: PageEncoding.ZERO, payload: new Uint8Array(0) }, geometry), 'PRESYNC_ERR_CHECKSUM');
  });

  it('a payload that decompresses to the wrong size is PROTOCOL', () => {
    const short = deflateRawSync(Buffer.alloc(PS - 1, 1));
    expectError(() => decodePage({ index: 1, digest: 0n, encoding: PageEncoding.DEFLATE, payload: short }, geometry), 'PRESYNC_ERR_PROTOCOL');
    const raw = { index: 1, digest: 0n, encoding: PageEncoding.RAW, payload: new Uint8Array(PS - 1).fill(1) } as const;
    expectError(() => decodePage(raw, geometry), 'PRESYNC_ERR_PROTOCOL');
    expectError(() => new FrameDecoder({ geometry }).push(encodeFrame(pagesFrame(1, [raw]))), 'PRESYNC_ERR_PROTOCOL');
    const garbage = { index: 1, digest: 0n, encoding: PageEncoding.DEFLATE, payload: randomBytes(100) } as const;
    expectError(() => decodePage(garbage, geometry), 'PRESYNC_ERR_PROTOCOL');
  });

  it('a decompression bomb is stopped at the page size', () => {
    // deflate tops out near 1032:1, so 3 MiB of zeros is the biggest bomb that fits under a page.
    const bomb = deflateRawSync(Buffer.alloc(3 * 1024 * 1024), { level: 9 });
    assert.ok(bomb.length < PS, `bomb is ${bomb.length} bytes`);
    expectError(() => decodePage({ index: 1, digest: 0n, encoding: PageEncoding.DEFLATE, payload: bomb }, geometry), 'PRESYNC_ERR_PROTOCOL');
    const big = deflateRawSync(Buffer.alloc(256 * 1024 * 1024), { level: 9 });
    expectError(() => deflateCodec().decompress(big, PS), 'PRESYNC_ERR_PROTOCOL');
  });

  it('lz4: a size prefix other than the page size is refused before decompressing', { skip: !lz4Codec() && 'lz4-napi not installed' }, () => {
    const lz4 = lz4Codec();
    assert.ok(lz4);
    const good = lz4.compress(new Uint8Array(PS).fill(3));
    assert.ok(good);
    const lie = Buffer.from(good);
    lie.writeUInt32LE(0x7fffffff, 0);
    expectError(() => decodePage({ index: 1, digest: 0n, encoding: PageEncoding.LZ4, payload: lie }, geometry), 'PRESYNC_ERR_PROTOCOL');
    const truncated = Buffer.from(good).subarray(0, good.length - 3);
    expectError(() => decodePage({ index: 1, digest: 0n, encoding: PageEncoding.LZ4, payload: truncated }, geometry), 'PRESYNC_ERR_PROTOCOL');
  });

  it('zstd pages are refused: no decoder in this build', () => {
    expectError(() => decodePage({ index: 1, digest: 0n, encoding: PageEncoding.ZSTD, payload: new Uint8Array(10) }, geometry), 'PRESYNC_ERR_PROTOCOL');
  });

  it('maxPagesPerFrame batches always fit the frame limit', () => {
    const max = 1 << 20;
    const n = maxPagesPerFrame(PS, max);
    const img = new Uint8Array(PS * n);
    for (let i = 0; i < n; i++) img.set(randomBytes(PS), i * PS);
    const recs = encodePages(img, Array.from({ length: n }, (_, i) => i), { pageSize: PS, codec: 'deflate' });
    const frame = pagesFrame(1, recs);
    assert.ok(pagesFrameBytes(recs) <= max);
    assert.equal(encodeFrame(frame, { maxFrameBytes: max }).length, pagesFrameBytes(recs));
    expectError(() => encodeFrame(pagesFrame(1, [...recs, recs[0]]), { maxFrameBytes: max }), 'PRESYNC_ERR_FRAME_TOO_LARGE');
  });
});

it('a raw page encoded from a reused Buffer is a snapshot (Buffer#slice would be a view)', async () => {
  await initDigest();
  const buf = Buffer.alloc(4096, 7);
  const rec = encodePage(3, buf, { pageSize: 4096 });
  buf.fill(9);
  assert.equal(digestPage(rec.payload), rec.digest);
  assert.equal(rec.payload[0], 7);
});
