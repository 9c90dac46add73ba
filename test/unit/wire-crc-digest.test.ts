import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { crc32, crc32Table, hasNativeCrc32 } from '../../src/wire/crc32.ts';
import * as digest from '../../src/native/page-digest.ts';

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('crc32', () => {
  const vectors: Array<[string, number]> = [
    ['', 0],
    ['123456789', 0xcbf43926],
    ['The quick brown fox jumps over the lazy dog', 0x414fa339],
    ['a', 0xe8b7be43],
  ];

  it('matches the standard CRC-32 check values', () => {
    for (const [s, want] of vectors) {
      assert.equal(crc32(ascii(s)), want, s);
      assert.equal(crc32Table(ascii(s)), want, `table: ${s}`);
    }
  });

  it('continues across parts like one pass over the whole', () => {
    const data = randomBytes(10_000);
    const whole = crc32(data);
    assert.equal(crc32(data.subarray(3000), crc32(data.subarray(0, 3000))), whole);
    assert.equal(crc32Table(data.subarray(3000), crc32Table(data.subarray(0, 3000))), whole);
  });

  it('table fallback agrees with the native one on random data', () => {
    for (let i = 0; i < 50; i++) {
      const d = randomBytes(i * 37);
      assert.equal(crc32Table(d), crc32(d));
    }
    assert.equal(typeof hasNativeCrc32, 'boolean');
  });
});

describe('page digests', () => {
  before(() => digest.initDigest());

  it('is XXH64 with seed 0 (reference vectors)', () => {
    assert.equal(digest.digestPage(ascii('')), 0xef46db3751d8e999n);
    assert.equal(digest.digestPage(ascii('a')), 0xd24ec4f1a98c6e5bn);
    assert.equal(digest.digestPage(ascii('abc')), 0x44bc2cf5ad770999n);
  });

  it('exports the zero-page digest after init', () => {
    assert.ok(digest.isDigestReady());
    assert.equal(digest.ZERO_PAGE_DIGEST, digest.digestPage(new Uint8Array(4096)));
    assert.equal(digest.zeroPageDigest(4096), digest.ZERO_PAGE_DIGEST);
    assert.notEqual(digest.zeroPageDigest(8192), digest.ZERO_PAGE_DIGEST);
  });

  it('digestPages equals per-page digests, written at the offset', () => {
    const ps = 4096;
    const image = randomBytes(ps * 10);
    image.fill(0, ps * 3, ps * 4);
    const out = new BigUint64Array(12);
    digest.digestPages(image, ps, 2, 7, out, 5);
    assert.equal(out[4], 0n);
    for (let i = 0; i < 7; i++) {
      assert.equal(out[5 + i], digest.digestPage(image.subarray((2 + i) * ps, (3 + i) * ps)));
    }
    assert.equal(out[6], digest.ZERO_PAGE_DIGEST);
  });

  it('digestPages rejects ranges outside the image or the output', () => {
    const image = new Uint8Array(4096 * 2);
    assert.throws(() => digest.digestPages(image, 4096, 1, 2, new BigUint64Array(2)), { code: 'PRESYNC_ERR_PAGE_RANGE' });
    assert.throws(() => digest.digestPages(image, 4096, 0, 2, new BigUint64Array(1)), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  });

  it('digests differ for pages differing in one bit', () => {
    const a = new Uint8Array(4096);
    const b = new Uint8Array(4096);
    b[4095] = 1;
    assert.notEqual(digest.digestPage(a), digest.digestPage(b));
  });
});

describe('isZeroPage', () => {
  it('finds a single non-zero byte anywhere', () => {
    const page = new Uint8Array(4096);
    assert.ok(digest.isZeroPage(page));
    for (const at of [0, 1, 7, 8, 2048, 4095]) {
      page[at] = 0x80;
      assert.equal(digest.isZeroPage(page), false, `byte ${at}`);
      page[at] = 0;
    }
  });

  it('works on unaligned views and sizes beyond its zero block', () => {
    const buf = new Uint8Array(200_003);
    assert.ok(digest.isZeroPage(buf.subarray(3)));
    buf[199_999] = 1;
    assert.equal(digest.isZeroPage(buf.subarray(3)), false);
    assert.ok(digest.isZeroPage(buf.subarray(3, 199_999)));
    assert.ok(digest.isZeroPage(new Uint8Array(0)));
  });
});

describe('crc32 edge cases', () => {
  it('an empty part (even on a zero-length ArrayBuffer) does not reset a running CRC', () => {
    const running = crc32(Buffer.from('abc'));
    assert.equal(crc32(new Uint8Array(0), running), running);
    assert.equal(crc32(Buffer.from(new BigUint64Array(0).buffer, 0, 0), running), running);
  });
});
