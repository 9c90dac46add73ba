import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { nativePageHash } from '../../src/native/pagehash.ts';
import { digestPageWasm as digestPage, initDigest } from '../../src/native/page-digest.ts';

test('the native hasher is built (npm ci runs node-gyp) and matches WebAssembly XXH64 exactly', { skip: process.env.PRESYNC_NO_NATIVE === '1' }, async () => {
  await initDigest();
  assert.ok(nativePageHash, 'native/build/Release/pagehash.node is missing: run npm ci (needs g++ and make)');
  for (const pageSize of [1, 3, 7, 8, 31, 32, 33, 512, 4096, 65536]) {
    const pages = 17;
    const buf = randomBytes(pageSize * pages);
    const out = new BigUint64Array(pages + 2);
    assert.equal(nativePageHash.hashPages(buf, pageSize, out, 2), pages);
    for (let p = 0; p < pages; p++) assert.equal(out[p + 2], digestPage(buf.subarray(p * pageSize, (p + 1) * pageSize)), `size ${pageSize} page ${p}`);
  }
});

test('hashCompare lists exactly the pages whose digest changed and stores the new digests', { skip: !nativePageHash }, async () => {
  await initDigest();
  const ps = 4096;
  const buf = randomBytes(ps * 64);
  const digests = new BigUint64Array(100);
  const dirty = new Uint32Array(64);
  assert.equal(nativePageHash!.hashCompare(buf, ps, digests, 10, true, dirty, 0), 64, 'first scan: every page');
  buf[5 * ps + 9] ^= 1;
  buf[60 * ps] ^= 0x80;
  const n = nativePageHash!.hashCompare(buf, ps, digests, 10, false, dirty, 0);
  assert.deepEqual([...dirty.subarray(0, n)], [15, 70]);
  assert.equal(digests[15], digestPage(buf.subarray(5 * ps, 6 * ps)));
});

test('bad arguments are refused, not trusted', { skip: !nativePageHash }, () => {
  const out = new BigUint64Array(1);
  assert.throws(() => nativePageHash!.hashPages(new Uint8Array(8192), 4096, out, 0), /output too small/);
  assert.throws(() => nativePageHash!.hashPages(new Uint8Array(8192), 0, out, 0));
  assert.throws(() => (nativePageHash as unknown as { hashPages: (...a: unknown[]) => number }).hashPages('x', 4096, out, 0));
  assert.throws(() => nativePageHash!.hashCompare(new Uint8Array(8192), 4096, new BigUint64Array(1), 0, true, new Uint32Array(2), 0), /beyond/);
});

test('hashResident hashes the data pages of a mapped sparse file and gives holes the zero digest without allocating them', { skip: !nativePageHash?.hashResident }, async () => {
  await initDigest();
  const { openSync, writeSync, ftruncateSync, fstatSync, closeSync, rmSync, mkdtempSync } = await import('node:fs');
  const dir = mkdtempSync('/dev/shm/presync-resident-');
  const ps = 4096;
  const pages = 4096;
  const fd = openSync(`${dir}/img`, 'w+');
  try {
    ftruncateSync(fd, ps * pages);
    const data = new Map<number, Buffer>();
    for (const p of [0, 1, 7, 1000, 1001, 4095]) {
      const b = randomBytes(ps);
      data.set(p, b);
      writeSync(fd, b, 0, ps, p * ps);
    }
    const blocks = fstatSync(fd).blocks;
    const view = new Uint8Array(nativePageHash!.mapFile!(fd, 0, ps * pages));
    const out = new BigUint64Array(pages + 3);
    assert.equal(nativePageHash!.hashResident!(view, ps, out, 3, 2), data.size);
    const zero = digestPage(new Uint8Array(ps));
    for (let p = 0; p < pages; p++) assert.equal(out[p + 3], data.has(p) ? digestPage(data.get(p)!) : zero, `page ${p}`);
    assert.equal(fstatSync(fd).blocks, blocks, 'no hole was allocated');
    assert.throws(() => nativePageHash!.hashResident!(view.subarray(1), ps, out, 0), /4 KiB/);
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});
