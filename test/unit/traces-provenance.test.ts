/**
 * The recorded traces of real programs (traces/, test-guest/apps/README.md):
 * each is a valid presync-trace/1 file of 60 s of 100 ms epochs on the
 * 256 MiB test guest, small, and described in traces/provenance.json.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { GUEST_APPS } from '../../src/lab/app-traces.ts';
import { pauseBound } from '../../src/lab/pause-bound.ts';
import { loadTrace, parseTraceText } from '../../src/sim/trace.ts';
import { traceWorkload } from '../../src/sim/trace-workload.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const DIR = join(ROOT, 'traces');
const prov = JSON.parse(readFileSync(join(DIR, 'provenance.json'), 'utf8')) as Record<string, Record<string, unknown>>;
const files = readdirSync(DIR).filter((f) => f.endsWith('.jsonl.gz')).sort();

test('every real program has a trace, and every trace its provenance', () => {
  assert.deepEqual(files, [...GUEST_APPS].map((a) => `${a}.jsonl.gz`).sort());
  for (const app of GUEST_APPS) {
    const p = prov[app];
    assert.ok(p, `provenance of ${app}`);
    assert.equal(p.file, `traces/${app}.jsonl.gz`);
    assert.equal(p.program, app);
    for (const k of ['kind', 'guestCommand', 'recordCommand', 'kernel', 'qemu']) assert.ok(typeof p[k] === 'string' && (p[k] as string).length > 0, `${app}.${k}`);
    assert.match(p.recordCommand as string, /^presync trace record /);
    assert.match(p.kernel as string, /^linux-image-\S+ \S+$/);
    assert.ok(!Number.isNaN(Date.parse(p.date as string)), `${app}.date`);
    const pkgs = p.packages as string[];
    assert.ok(Array.isArray(pkgs) && pkgs.length > 0);
    for (const x of pkgs) assert.match(x, /^[a-z0-9.+-]+ \S+$/, `"${x}" is "package version"`);
    assert.equal(p.epochMs, 100);
    assert.equal(p.durationMs, 60_000);
  }
});

for (const f of files) {
  test(`trace ${f}: valid, 60 s of 100 ms epochs on a 256 MiB guest, small`, async () => {
    const path = join(DIR, f);
    assert.ok(statSync(path).size < 2 * 1024 * 1024, `${f} is ${statSync(path).size} bytes`);
    const t = await loadTrace(path);
    assert.equal(t.header.pageSize, 4096);
    assert.equal(t.header.pageCount, 65536);
    assert.equal(t.header.epochMs, 100);
    assert.ok(t.header.nonZero, 'the baseline scan names the non-zero pages');
    assert.ok(t.epochs.length >= 590 && t.epochs.length <= 600, `${t.epochs.length} epochs`);
    const end = t.epochs.at(-1)!.t;
    assert.ok(end >= 59_000 && end <= 70_000, `ends at ${end} ms`);
    // Something ran: the program wrote pages in most epochs.
    const busy = t.epochs.filter((e) => e.ranges.length > 0).length;
    assert.ok(busy > t.epochs.length / 2, `${busy} epochs with writes`);
    assert.ok(existsSync(join(DIR, 'README.md')));
  });
}

test('pause bound: free skips inside bursts, gaps paid for in page-epochs of residual, the budget caps them', () => {
  // Pages 0..3 written every epoch (gap 1: skipping costs nothing); page 10 every 5 epochs (each skip costs 4).
  const writes = (e: number): number[] => [0, 1, 2, 3, ...(e % 5 === 0 ? [10] : [])];
  const lines = Array.from({ length: 100 }, (_, e) => `{"t":${(e + 1) * 100},"dirty":[${writes(e).join(',')}]}`);
  const header = '{"format":"presync-trace/1","pageSize":4096,"pageCount":64,"epochMs":100,"source":"test","nonZero":[]}';
  const w = traceWorkload(parseTraceText([header, ...lines].join('\n')));
  const none = pauseBound(w, 10_000, 100, 0);
  assert.equal(none.firstCopies, 5);
  // Naive: 4 pages × 99 rewrites + page 10's 19 rewrites.
  assert.equal(none.naiveRewrites, 4 * 99 + 19);
  assert.equal(none.boundRewrites, 19, 'with no budget only the gap-1 skips are free');
  // 0.4 pages of average residual over 100 epochs = 40 page-epochs = 10 of page 10's gaps.
  assert.equal(pauseBound(w, 10_000, 100, 0.4).boundRewrites, 9);
  assert.equal(pauseBound(w, 10_000, 100, 100).boundRewrites, 0);
  assert.ok(none.boundOracleRatio > pauseBound(w, 10_000, 100, 100).boundOracleRatio);
});
