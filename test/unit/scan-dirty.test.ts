import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirtyScanner } from '../../src/guest/dirty-scanner.ts';
import { RamImageReader } from '../../src/guest/ram-image.ts';
import { nativePageHash } from '../../src/native/pagehash.ts';
import { digestPageWasm, initDigest, zeroPageDigest } from '../../src/native/page-digest.ts';

const PS = 4096;

function withImage(pages: number, fn: (path: string, content: Buffer) => Promise<void> | void): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'presync-scan-'));
  const path = join(dir, 'img');
  // Half random pages, half zero pages: both paths of the hasher.
  const content = Buffer.alloc(pages * PS);
  for (let p = 0; p < pages; p += 2) randomBytes(PS).copy(content, p * PS);
  writeFileAt(path, content, 0, true);
  return Promise.resolve(fn(path, content)).finally(() => rmSync(dir, { recursive: true, force: true }));
}

function writeFileAt(path: string, data: Uint8Array, offset: number, create = false): void {
  const fd = openSync(path, create ? 'w' : 'r+');
  writeSync(fd, data, 0, data.length, offset);
  closeSync(fd);
}

test('a mapped, threaded scan gives the WebAssembly XXH64 of every page, zero pages included', async () => {
  await initDigest();
  await withImage(20_000, async (path, content) => {
    const r = RamImageReader.open(path);
    if (nativePageHash?.mapFile) assert.ok(r.view(0, 8), 'native build maps the image');
    const s = new DirtyScanner(r, { threads: 2 });
    const first = s.scan();
    assert.equal(first.count(), 20_000);
    for (const p of [0, 1, 2, 3, 9_999, 19_998, 19_999]) assert.equal(s.digests[p], digestPageWasm(content.subarray(p * PS, (p + 1) * PS)), `page ${p}`);
    r.close();
  });
});

test('full scans report exactly the pages written in between, through the mapping', async () => {
  await initDigest();
  await withImage(20_000, async (path) => {
    const r = RamImageReader.open(path);
    const s = new DirtyScanner(r, { threads: 2 });
    s.scan();
    assert.equal((await s.scanAsync()).count(), 0, 'nothing written: nothing dirty');
    const written = [0, 1, 4095, 8192, 8193, 12_345, 19_999];
    for (const p of written) writeFileAt(path, randomBytes(PS), p * PS);
    // A zero page becoming non-zero and back counts as written once each way.
    assert.deepEqual([...(await s.scanAsync()).toArray()], written);
    writeFileAt(path, Buffer.alloc(PS), 8193 * PS);
    assert.deepEqual([...s.scan().toArray()], [8193]);
    r.close();
  });
});

test('incremental scans find a cold page within 1/sliceFraction scans and re-check recent writes each time', async () => {
  await initDigest();
  await withImage(4096, async (path) => {
    const r = RamImageReader.open(path);
    const s = new DirtyScanner(r);
    s.scan();
    writeFileAt(path, randomBytes(PS), 3000 * PS);
    let seenAt = -1;
    for (let i = 0; i < 4 && seenAt < 0; i++) if ((await s.scanIncremental({ sliceFraction: 1 / 4 })).has(3000)) seenAt = i;
    assert.ok(seenAt >= 0, 'seen within four quarter-slices');
    // Page 3000 is now "recent": a new write to it is seen at the very next incremental scan.
    writeFileAt(path, randomBytes(PS), 3000 * PS);
    assert.ok((await s.scanIncremental({ sliceFraction: 1 / 4 })).has(3000));
    // A hot page is checked at once, wherever the slice is.
    const hot = (await s.scanIncremental({ sliceFraction: 1 / 4 })).clone();
    hot.clear().add(10);
    writeFileAt(path, randomBytes(PS), 10 * PS);
    assert.ok((await s.scanIncremental({ sliceFraction: 1 / 1000, hot })).has(10));
    // The full scan afterwards agrees: the incremental scans left no page behind.
    writeFileAt(path, randomBytes(PS), 2 * PS);
    assert.ok(s.scan().has(2));
    assert.equal(s.scan().count(), 0);
    r.close();
  });
});

test('with PRESYNC_NO_MMAP-like reads (no view) a scan gives the same digests', async () => {
  await initDigest();
  await withImage(3000, async (path) => {
    const a = RamImageReader.open(path);
    const b = RamImageReader.open(path);
    // Force the pread path on b by asking for views it cannot give.
    (b as unknown as { view: () => null }).view = () => null;
    const sa = new DirtyScanner(a, { threads: 2 });
    const sb = new DirtyScanner(b, { threads: 1 });
    sa.scan();
    sb.scan();
    assert.deepEqual([...sa.digests], [...sb.digests]);
    a.close();
    b.close();
  });
});

test('one scan at a time: a second scan while one runs is refused; skip leaves stale pages out of the slice only', async () => {
  await initDigest();
  await withImage(16_384, async (path) => {
    const r = RamImageReader.open(path);
    const s = new DirtyScanner(r);
    s.scan();
    const running = s.scanAsync();
    assert.equal(s.scanning, true);
    assert.throws(() => s.scan(), { code: 'PRESYNC_ERR_INTERNAL' });
    await assert.rejects(s.scanIncremental(), { code: 'PRESYNC_ERR_INTERNAL' });
    await running;
    assert.equal(s.scanning, false);
    // Pages 0..8191 skipped, 8192.. not: a change in each half, one full slice.
    writeFileAt(path, randomBytes(PS), 100 * PS);
    writeFileAt(path, randomBytes(PS), 9000 * PS);
    const skip = (await s.scanAsync()).clone().clear();
    skip.addRange(0, 8191);
    writeFileAt(path, randomBytes(PS), 200 * PS);
    writeFileAt(path, randomBytes(PS), 9100 * PS);
    const d = await s.scanIncremental({ sliceFraction: 1, skip });
    assert.ok(d.has(9100), 'an unskipped page is scanned');
    assert.ok(!d.has(200), 'a skipped page is not');
    assert.ok(s.scan().has(200), 'the full scan still finds it');
    r.close();
  });
});

test('holes of a sparse image are zero pages and stay holes: a scan allocates nothing', async () => {
  await initDigest();
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'presync-sparse-'));
  try {
    const path = join(dir, 'ram');
    const fd = openSync(path, 'w');
    ftruncateSync(fd, 4096 * PS);
    closeSync(fd);
    writeFileAt(path, randomBytes(PS), 1000 * PS);
    const before = statSync(path).blocks;
    const r = RamImageReader.open(path);
    const s = new DirtyScanner(r);
    assert.equal(s.scan().count(), 4096);
    assert.equal(s.digests[0], zeroPageDigest(PS));
    assert.equal((await s.scanAsync()).count(), 0);
    writeFileAt(path, randomBytes(PS), 3000 * PS);
    assert.deepEqual([...(await s.scanIncremental({ sliceFraction: 1 })).toArray()], [3000]);
    assert.ok(statSync(path).blocks <= before + (PS / 512) * 2, 'only the two written pages are allocated');
    r.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
