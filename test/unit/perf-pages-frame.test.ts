import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { FrameDecoder } from '../../src/wire/decoder.ts';
import { initDigest } from '../../src/native/page-digest.ts';
import { encodeFrame } from '../../src/wire/framing.ts';
import { encodeRawPagesFrame } from '../../src/wire/pages-frame.ts';
import { applyPageBatch, encodePages, pagesFrame } from '../../src/wire/pages.ts';

test('the one-buffer PAGES frame equals the record-by-record encoding byte for byte (raw and zero pages)', async () => {
  await initDigest();
  for (const ps of [512, 4096]) {
    const n = 37;
    const data = randomBytes(n * ps);
    for (const z of [0, 5, 6, 36]) data.fill(0, z * ps, (z + 1) * ps);
    // A page that is zero but for its last byte must travel raw.
    data.fill(0, 7 * ps, (8 * ps) - 1);
    const indices = Array.from({ length: n }, (_, i) => 1000 + i * 3);
    const image = Buffer.alloc((1000 + n * 3) * ps);
    indices.forEach((p, i) => data.copy(image, p * ps, i * ps, (i + 1) * ps));
    const expected = encodeFrame(pagesFrame(42, encodePages(image, indices, { pageSize: ps })));
    const got = encodeRawPagesFrame(42, indices, data, ps);
    assert.deepEqual(got.frame, expected, `page size ${ps}`);
    // Straight from the image, pages picked by position: the same frame.
    const fromImage = encodeRawPagesFrame(42, indices, image, ps, { srcPos: Uint32Array.from(indices) });
    assert.deepEqual(fromImage.frame, expected, `page size ${ps}, from the image`);
    assert.deepEqual([...fromImage.digests], [...got.digests]);
    // And a target decodes and applies it to the same bytes.
    const dec = new FrameDecoder({ geometry: { pageSize: ps, pageCount: 1000 + n * 3 } });
    const [f] = dec.push(got.frame);
    assert.equal(f.type, 'pages');
    const target = Buffer.alloc(image.length, 0xee);
    applyPageBatch(f as Parameters<typeof applyPageBatch>[0], { pageSize: ps, pageCount: 1000 + n * 3 }, target);
    for (const p of indices) assert.deepEqual(target.subarray(p * ps, (p + 1) * ps), image.subarray(p * ps, (p + 1) * ps));
  }
});

test('bad input is refused with a code, not encoded', async () => {
  await initDigest();
  assert.throws(() => encodeRawPagesFrame(1, [0, 1], new Uint8Array(4096), 4096), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  assert.throws(() => encodeRawPagesFrame(1, [-1], new Uint8Array(4096), 4096), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  assert.throws(() => encodeRawPagesFrame(1, [0, 1, 2], randomBytes(3 * 4096), 4096, { maxFrameBytes: 8192 }), { code: 'PRESYNC_ERR_FRAME_TOO_LARGE' });
});
