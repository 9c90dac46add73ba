import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ImageLayout, layoutProblem, matchLayout, MAX_SEGMENTS } from '../../src/core/image-layout.ts';
import { PresyncError } from '../../src/core/errors.ts';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PresyncError, String(e));
    return e.code;
  }
  return 'none';
}

describe('image layout: page index → (segment, offset)', () => {
  const l = new ImageLayout([
    { id: 'm0', pageCount: 3 },
    { id: 'm1', pageCount: 1 },
    { id: 'm2', pageCount: 5 },
  ]);

  it('places every page of the image in its segment, in order, with no gap and no overlap', () => {
    assert.equal(l.pageCount, 9);
    const want = [
      [0, 0], [0, 1], [0, 2],
      [1, 0],
      [2, 0], [2, 1], [2, 2], [2, 3], [2, 4],
    ];
    for (let p = 0; p < 9; p++) assert.deepEqual(l.locate(p), { segment: want[p][0], offset: want[p][1] }, `page ${p}`);
    assert.deepEqual([0, 1, 2, 3].map((i) => l.firstPage(i)), [0, 3, 4, 9]);
    assert.deepEqual([0, 2, 3, 4, 8].map((p) => l.segmentEnd(p)), [3, 3, 4, 9, 9]);
  });

  it('refuses a page outside the image', () => {
    assert.equal(code(() => l.locate(9)), 'PRESYNC_ERR_PAGE_RANGE');
    assert.equal(code(() => l.locate(-1)), 'PRESYNC_ERR_PAGE_RANGE');
    assert.equal(code(() => l.locate(1.5)), 'PRESYNC_ERR_PAGE_RANGE');
    assert.equal(code(() => l.pieces(8, 2)), 'PRESYNC_ERR_PAGE_RANGE');
  });

  it('cuts a range at segment boundaries, each piece inside one file', () => {
    assert.deepEqual(l.pieces(2, 4), [
      { segment: 0, offset: 2, first: 2, count: 1 },
      { segment: 1, offset: 0, first: 3, count: 1 },
      { segment: 2, offset: 0, first: 4, count: 2 },
    ]);
    assert.deepEqual(l.pieces(0, 9).map((p) => p.count), [3, 1, 5]);
    assert.deepEqual(l.pieces(5, 0), []);
    // Every range of the image: pieces cover it exactly, in order.
    for (let a = 0; a < 9; a++) {
      for (let n = 1; a + n <= 9; n++) {
        const ps = l.pieces(a, n);
        let at = a;
        for (const p of ps) {
          assert.equal(p.first, at);
          assert.equal(l.firstPage(p.segment) + p.offset, p.first);
          assert.ok(p.offset + p.count <= [3, 1, 5][p.segment]);
          at += p.count;
        }
        assert.equal(at, a + n);
      }
    }
  });

  it('one segment is the whole image', () => {
    const one = new ImageLayout([{ id: 'ram0', pageCount: 7 }]);
    assert.deepEqual(one.locate(6), { segment: 0, offset: 6 });
    assert.equal(one.segmentEnd(0), 7);
  });

  it('refuses bad layouts: none, too many, a bad or repeated id, an empty segment', () => {
    assert.match(layoutProblem([]) ?? '', /1 to/);
    assert.match(layoutProblem(Array.from({ length: MAX_SEGMENTS + 1 }, (_, i) => ({ id: `m${i}`, pageCount: 1 }))) ?? '', /1 to/);
    assert.match(layoutProblem([{ id: '0bad', pageCount: 1 }]) ?? '', /letter/);
    assert.match(layoutProblem([{ id: 'a,b', pageCount: 1 }]) ?? '', /letter/);
    assert.match(layoutProblem([{ id: 'x'.repeat(65), pageCount: 1 }]) ?? '', /letter/);
    assert.match(layoutProblem([{ id: 'm0', pageCount: 1 }, { id: 'm0', pageCount: 1 }]) ?? '', /twice/);
    assert.match(layoutProblem([{ id: 'm0', pageCount: 0 }]) ?? '', /at least one/);
    assert.equal(layoutProblem([{ id: 'ram-node0.x_1', pageCount: 1 }]), undefined);
    assert.equal(code(() => new ImageLayout([])), 'PRESYNC_ERR_BAD_ARGUMENT');
  });
});

describe('matching the source layout with the target files', () => {
  const src = [
    { id: 'm0', pageCount: 4 },
    { id: 'm1', pageCount: 2 },
  ];

  it('maps each source segment to the target file of its id, in the source order', () => {
    const got = matchLayout(src, 4096, [
      { id: 'm1', path: '/t/b', bytes: 2 * 4096 },
      { id: 'm0', path: '/t/a' },
    ]);
    assert.deepEqual(got, [
      { id: 'm0', path: '/t/a', pageCount: 4 },
      { id: 'm1', path: '/t/b', bytes: 8192, pageCount: 2 },
    ]);
  });

  it('refuses other ids, a missing or extra segment, or another size, naming what differs', () => {
    const e = (t: Parameters<typeof matchLayout>[2]): string => {
      try {
        matchLayout(src, 4096, t);
      } catch (x) {
        assert.ok(x instanceof PresyncError);
        assert.equal(x.code, 'PRESYNC_ERR_GEOMETRY');
        return x.message;
      }
      return 'accepted';
    };
    assert.match(e([{ id: 'm0', path: '/a' }]), /2 segments \(m0, m1\), this target has 1 \(m0\)/);
    assert.match(e([{ id: 'm0', path: '/a' }, { id: 'm1', path: '/b' }, { id: 'm2', path: '/c' }]), /this target has 3/);
    assert.match(e([{ id: 'm0', path: '/a' }, { id: 'n1', path: '/b' }]), /same ids/);
    assert.match(e([{ id: 'm0', path: '/a', bytes: 4096 }, { id: 'm1', path: '/b' }]), /segment "m0" is 16384 B on the source, 4096 B on the target/);
  });
});
