import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { PageSet } from '../../src/core/pageset.ts';
import { createWorkload, WORKLOAD_NAMES } from '../../src/sim/workloads/index.ts';
import { loadTrace, readTrace, TraceWriter, encodeDirtyList, parseTraceText, rangesToPageSet, formatHeaderLine, formatEpochLine } from '../../src/sim/trace.ts';
import { loadTraceWorkload, recordWorkload, recordWorkloadToFile, traceWorkload } from '../../src/sim/trace-workload.ts';
import type { Workload } from '../../src/sim/workload.ts';

const dir = mkdtempSync(join(tmpdir(), 'presync-trace-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const geometry = { pageSize: 4096, pageCount: 65536 };
const E = 100;

function writes(w: Workload, from: number, to: number): PageSet {
  const s = new PageSet(w.geometry.pageCount);
  w.writes(from, to, s);
  return s;
}

/** Record → file → read → replay: every epoch's set matches the original's. */
async function roundTrip(name: string, file: string, gzipOpt?: boolean): Promise<void> {
  const w = createWorkload(name, { geometry, seed: 21 });
  const n = await recordWorkloadToFile(w, file, { epochMs: E, durationMs: 10_000, ...(gzipOpt === undefined ? {} : { gzip: gzipOpt }) });
  assert.equal(n, 100);
  const trace = await loadTrace(file);
  assert.equal(trace.header.pageCount, geometry.pageCount);
  assert.equal(trace.header.epochMs, E);
  assert.equal(trace.epochs.length, 100);
  const within = traceWorkload(trace, { attribution: 'within' });
  const atEnd = traceWorkload(trace, { attribution: 'at-end' });
  let nonEmpty = 0;
  for (let i = 0; i < 100; i++) {
    const from = i * E;
    const orig = writes(w, from, from + E);
    if (orig.count() > 0) nonEmpty++;
    assert.equal(trace.epochs[i].t, from + E);
    assert.ok(rangesToPageSet(trace.epochs[i].ranges, geometry.pageCount).equals(orig), `${name} line for epoch ${i}`);
    assert.ok(writes(within, from, from + E).equals(orig), `${name} within-replay epoch ${i}`);
    // 'at-end': the line ending at t counts at instant t, i.e. in the next epoch.
    assert.ok(writes(atEnd, from + E, from + 2 * E).equals(orig), `${name} at-end replay epoch ${i}`);
  }
  assert.ok(nonEmpty > 50, `${name}: ${nonEmpty} non-empty epochs`);
  assert.ok(within.initialNonZero().words().every((v, i) => v === w.initialNonZero().words()[i]), 'nonZero survives');
  assert.ok(writes(within, 0, 10_000).equals(writes(w, 0, 10_000)));
}

for (const name of WORKLOAD_NAMES) {
  test(`${name}: record → plain file → replay gives the same dirty sets per epoch`, async () => {
    await roundTrip(name, join(dir, `${name}.trace`));
  });
}

test('gzip round trip, by extension and by request; readers sniff magic bytes, not names', async () => {
  const a = join(dir, 'movie.trace.gz');
  await roundTrip('movie', a);
  assert.deepEqual([...readFileSync(a).subarray(0, 2)], [0x1f, 0x8b]);
  const b = join(dir, 'movie-gz-without-extension.jsonl');
  await roundTrip('movie', b, true);
  assert.deepEqual([...readFileSync(b).subarray(0, 2)], [0x1f, 0x8b]);
  const c = join(dir, 'plain-with-gz-name.gz');
  await roundTrip('audio', c, false);
  assert.equal(readFileSync(c, 'utf8')[0], '{');
  assert.ok((await readTrace(b)).gzip);
  assert.equal(gunzipSync(readFileSync(b)).toString('utf8').split('\n')[0].includes('"format":"presync-trace/1"'), true);
});

test('in-memory recording equals the file recording', async () => {
  const w = createWorkload('text-editing', { geometry, seed: 4 });
  const mem = recordWorkload(w, { epochMs: 250, durationMs: 5_000 });
  const f = join(dir, 'te.trace');
  await recordWorkloadToFile(w, f, { epochMs: 250, durationMs: 5_000 });
  const disk = await loadTrace(f);
  assert.deepEqual(disk.header, mem.header);
  assert.deepEqual(disk.epochs, mem.epochs);
});

test('a partial last epoch ends at the duration', () => {
  const w = createWorkload('idle', { geometry: { pageSize: 4096, pageCount: 64 }, seed: 1 });
  const t = recordWorkload(w, { epochMs: 300, durationMs: 1000 });
  assert.deepEqual(t.epochs.map((e) => e.t), [300, 600, 900, 1000]);
});

test('replay: attribution rules at the boundaries, nothing outside the trace', () => {
  const text = [
    '{"format":"presync-trace/1","pageSize":4096,"pageCount":100,"epochMs":100,"source":"hand"}',
    '{"t":100,"dirty":[1]}',
    '{"t":200,"dirty":["10-12"]}',
    '{"t":300,"dirty":[]}',
    '{"t":400,"dirty":[99,"50-51"]}',
  ].join('\n');
  const trace = parseTraceText(text);
  const atEnd = traceWorkload(trace, { attribution: 'at-end' });
  const within = traceWorkload(trace, { attribution: 'within' });
  const pages = (w: Workload, a: number, b: number): number[] => [...writes(w, a, b)];
  assert.deepEqual(pages(atEnd, 0, 100), []);
  assert.deepEqual(pages(atEnd, 100, 200), [1]);
  assert.deepEqual(pages(atEnd, 100, 100.5), [1]);
  assert.deepEqual(pages(atEnd, 150, 400), [10, 11, 12]);
  assert.deepEqual(pages(atEnd, 400, 1e9), [50, 51, 99]);
  assert.deepEqual(pages(within, 0, 100), [1]);
  assert.deepEqual(pages(within, 99.5, 100), [1]);
  assert.deepEqual(pages(within, 100, 200), [10, 11, 12]);
  assert.deepEqual(pages(within, 400, 1e9), []);
  assert.equal(atEnd.initialNonZero().count(), 100, 'no nonZero field: every page');
  assert.match(atEnd.describe(), /hand: 4 epochs/);
});

test('writer: ranges for runs of 3+, single pages otherwise; header carries nonZero', () => {
  const s = PageSet.of(70, [0, 1, 3, 4, 5, 7, 31, 32, 33, 34, 63, 64, 65, 69]);
  assert.equal(encodeDirtyList(s), '[0,1,"3-5",7,"31-34","63-65",69]');
  assert.equal(encodeDirtyList(PageSet.full(100)), '["0-99"]');
  assert.equal(encodeDirtyList(new PageSet(10)), '[]');
  const full = new PageSet(200);
  full.addRange(30, 170);
  assert.equal(encodeDirtyList(full), '["30-170"]');
  assert.equal(formatEpochLine(12.5, s), '{"t":12.5,"dirty":[0,1,"3-5",7,"31-34","63-65",69]}');
  const h = formatHeaderLine({ pageSize: 4096, pageCount: 70, epochMs: 100, source: 'x "quoted"', nonZero: s });
  const parsed = parseTraceText(h).header;
  assert.equal(parsed.source, 'x "quoted"');
  assert.ok(rangesToPageSet(parsed.nonZero!, 70).equals(s));
});

test('reader normalises unsorted and overlapping entries', () => {
  const t = parseTraceText('{"format":"presync-trace/1","pageSize":4096,"pageCount":100,"epochMs":100}\n{"t":1,"dirty":[9,"3-5",4,"6-7",0,"20-30","25-26"]}\n');
  assert.deepEqual([...t.epochs[0].ranges], [0, 0, 3, 7, 9, 9, 20, 30]);
  assert.equal(t.header.source, '');
});

test('TraceWriter rejects misuse with stable codes', async () => {
  await assert.rejects(TraceWriter.open(join(dir, 'bad.trace'), { pageSize: 1000, pageCount: 10, epochMs: 100 }), { code: 'PRESYNC_ERR_BAD_ARGUMENT', message: /pageSize/ });
  await assert.rejects(TraceWriter.open(join(dir, 'no-such-dir', 'x.trace'), { pageSize: 4096, pageCount: 10, epochMs: 100 }), { code: 'PRESYNC_ERR_BAD_ARGUMENT', message: /cannot create/ });
  const w = await TraceWriter.open(join(dir, 'misuse.trace'), { pageSize: 4096, pageCount: 10, epochMs: 100 });
  await w.append(100, PageSet.of(10, [1]));
  await assert.rejects(w.append(100, new PageSet(10)), { code: 'PRESYNC_ERR_BAD_ARGUMENT', message: /above 100/ });
  await assert.rejects(w.append(200, new PageSet(11)), { code: 'PRESYNC_ERR_GEOMETRY' });
  await w.close();
  await w.close();
  await assert.rejects(w.append(300, new PageSet(10)), { message: /closed/ });
  const back = await loadTrace(join(dir, 'misuse.trace'));
  assert.equal(back.epochs.length, 1);
});

test('readTrace streams epochs lazily and can be closed early', async () => {
  const f = join(dir, 'long.trace.gz');
  await recordWorkloadToFile(createWorkload('uniform', { geometry, seed: 1 }), f, { epochMs: 10, durationMs: 20_000 });
  const r = await readTrace(f);
  let n = 0;
  for await (const e of r) {
    assert.equal(e.t, (n + 1) * 10);
    if (++n === 5) break;
  }
  assert.equal(n, 5);
  const all = await loadTraceWorkload(f);
  assert.equal(all.geometry.pageCount, 65536);
});
