/**
 * The fault matrix is only as good as its judge: the writer-image rule must
 * catch a flipped byte, a page written at the wrong index and a stale page,
 * and pass an image the writer really produced.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { checkWriterImage, differingPages, killQuietly, PAGE, startWriter } from '../../src/lab/faults-rig.ts';
import { processState } from '../../src/guest/controller.ts';
import { scratchDir } from '../helpers/scratch.ts';

test("the writer-image rule passes the writer's own image and catches flipped bytes, misplaced and future pages", { timeout: 30_000 }, async () => {
  const dir = scratchDir('presync-checks-');
  const w = await startWriter(dir, 'guest', 512);
  try {
    killQuietly(w.pid, 'SIGSTOP');
    for (let i = 0; i < 200 && processState(w.pid) !== 'T'; i++) await new Promise((r) => setTimeout(r, 5));
    const img = readFileSync(w.image);
    const ok = checkWriterImage(img);
    assert.deepEqual(ok.badPages, [], 'a real image passes');
    assert.ok(ok.counter > 0n);

    const flipped = Buffer.from(img);
    flipped[7 * PAGE + 1000] ^= 0x01;
    assert.deepEqual(checkWriterImage(flipped).badPages, [7], 'one flipped bit in a page body');

    const stamp = Buffer.from(img);
    stamp[9 * PAGE + 8] ^= 0x02; // the stamp's page index
    assert.deepEqual(checkWriterImage(stamp).badPages, [9], 'a flipped stamp');

    const moved = Buffer.from(img);
    img.copy(moved, 20 * PAGE, 21 * PAGE, 22 * PAGE); // page 21 written at index 20
    assert.ok(checkWriterImage(moved).badPages.includes(20), 'a page at the wrong index');

    // A page stamped after page 0's counter: the image mixes two moments.
    const future = Buffer.from(img);
    future.writeBigUInt64LE(ok.counter - 100n, 8);
    assert.ok(checkWriterImage(future).badPages.length > 0, 'pages newer than page 0');

    const zeroed = Buffer.from(img);
    zeroed.fill(0, 31 * PAGE, 32 * PAGE); // an odd page: its resident data is 0x5a
    assert.deepEqual(checkWriterImage(zeroed).badPages, [31], 'a zero page where data was');
    assert.deepEqual(checkWriterImage(zeroed, undefined, { allowZeroPages: true }).badPages, [], 'unless pages not received yet are allowed');

    assert.equal(differingPages(img, flipped), 1);
    assert.equal(differingPages(img, img), 0);
  } finally {
    w.kill();
  }
});
