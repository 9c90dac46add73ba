import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { PresyncError } from '../../src/core/errors.ts';
import { loadTrace, parseTraceText, readTrace } from '../../src/sim/trace.ts';

const dir = mkdtempSync(join(tmpdir(), 'presync-badtrace-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const H = '{"format":"presync-trace/1","pageSize":4096,"pageCount":100,"epochMs":100,"source":"test"}';
const E1 = '{"t":100,"dirty":[1,"2-4"]}';

/** [case name, file text, line number expected in the message, what the message must say]. */
const cases: Array<[string, string, number, RegExp]> = [
  ['bad JSON', [H, E1, '{"t":200,"dirty":[1,}'].join('\n'), 3, /not valid JSON/],
  ['missing format', '{"pageSize":4096,"pageCount":100,"epochMs":100}', 1, /missing "format"/],
  ['epoch line first', E1, 1, /missing "format"/],
  ['unknown format', '{"format":"presync-trace/2","pageSize":4096,"pageCount":100,"epochMs":100}', 1, /unsupported format "presync-trace\/2"/],
  ['header not an object', '[1,2,3]', 1, /expected a JSON object, got an array/],
  ['pageSize not a power of two', '{"format":"presync-trace/1","pageSize":1000,"pageCount":100,"epochMs":100}', 1, /"pageSize" must be a power of two/],
  ['pageSize below 512', '{"format":"presync-trace/1","pageSize":256,"pageCount":100,"epochMs":100}', 1, /"pageSize"/],
  ['pageSize a string', '{"format":"presync-trace/1","pageSize":"4096","pageCount":100,"epochMs":100}', 1, /"pageSize".*got "4096"/],
  ['pageCount zero', '{"format":"presync-trace/1","pageSize":4096,"pageCount":0,"epochMs":100}', 1, /"pageCount" must be a positive integer/],
  ['pageCount fractional', '{"format":"presync-trace/1","pageSize":4096,"pageCount":10.5,"epochMs":100}', 1, /"pageCount"/],
  ['pageCount missing', '{"format":"presync-trace/1","pageSize":4096,"epochMs":100}', 1, /"pageCount".*undefined/],
  ['epochMs zero', '{"format":"presync-trace/1","pageSize":4096,"pageCount":100,"epochMs":0}', 1, /"epochMs" must be a positive number/],
  ['source not a string', '{"format":"presync-trace/1","pageSize":4096,"pageCount":100,"epochMs":100,"source":7}', 1, /"source" must be a string/],
  ['bad nonZero', '{"format":"presync-trace/1","pageSize":4096,"pageCount":100,"epochMs":100,"nonZero":["0-100"]}', 1, /nonZero\[0\]: page 100 is out of range/],
  ['non-integer page', [H, E1, '{"t":200,"dirty":[1.5]}'].join('\n'), 3, /dirty\[0\]: page 1.5 is not an integer/],
  ['page out of range', [H, '{"t":100,"dirty":[3,100]}'].join('\n'), 2, /dirty\[1\]: page 100 is out of range \[0, 100\)/],
  ['negative page', [H, '{"t":100,"dirty":[-1]}'].join('\n'), 2, /page -1 is out of range/],
  ['range out of range', [H, E1, '{"t":200,"dirty":["90-100"]}'].join('\n'), 3, /page 100 is out of range/],
  ['reversed range', [H, E1, E1.replace('100', '150').replace('"2-4"', '"9-3"')].join('\n'), 3, /range "9-3" is reversed/],
  ['malformed range', [H, '{"t":100,"dirty":["5-"]}'].join('\n'), 2, /"5-" is neither a page number nor a range/],
  ['numeric string', [H, '{"t":100,"dirty":["5"]}'].join('\n'), 2, /neither/],
  ['null entry', [H, '{"t":100,"dirty":[null]}'].join('\n'), 2, /expected a page number.*got null/],
  ['dirty not an array', [H, '{"t":100,"dirty":"1-2"}'].join('\n'), 2, /"dirty" must be an array/],
  ['dirty missing', [H, '{"t":100}'].join('\n'), 2, /missing "dirty"/],
  ['t missing', [H, E1, '{"dirty":[]}'].join('\n'), 3, /missing "t"/],
  ['second header', [H, E1, H].join('\n'), 3, /missing "t" \(a second header\?\)/],
  ['t repeated', [H, E1, E1].join('\n'), 3, /"t" must increase: 100 follows 100/],
  ['t decreasing', [H, E1, '{"t":200,"dirty":[]}', '{"t":150,"dirty":[]}'].join('\n'), 4, /"t" must increase: 150 follows 200/],
  ['t negative', [H, '{"t":-1,"dirty":[]}'].join('\n'), 2, /"t" must be a non-negative number/],
  ['t a string', [H, '{"t":"100","dirty":[]}'].join('\n'), 2, /"t" must be a non-negative number of ms, got "100"/],
  ['trailing garbage after JSON', [H, E1, '{"t":200,"dirty":[]} xyz'].join('\n'), 3, /not valid JSON/],
  ['garbage last line', [H, E1, '{"t":200,"dirty":[]}', 'this is not json', ''].join('\n'), 4, /not valid JSON/],
  ['truncated last line', [H, E1, '{"t":200,"dirty":[1,2'].join('\n'), 3, /not valid JSON/],
  ['empty file', '', 1, /the trace is empty/],
  ['blank lines only', '\n  \n\n', 3, /the trace is empty/],
  ['binary junk', '\u0000\u0001\u0002PK\u0003', 1, /not valid JSON/],
];

function isBadTrace(line: number, re: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof PresyncError, `a PresyncError, got ${String(e)}`);
    assert.equal(e.code, 'PRESYNC_ERR_BAD_TRACE');
    assert.match(e.message, new RegExp(`^trace line ${line}: `), e.message);
    assert.match(e.message, re);
    return true;
  };
}

for (const [name, text, line, re] of cases) {
  test(`rejects ${name} (line ${line}) from a file, a gzip file and the pure parser`, async () => {
    const f = join(dir, `${name.replace(/\W+/g, '-')}.trace`);
    writeFileSync(f, text);
    await assert.rejects(loadTrace(f), isBadTrace(line, re));
    writeFileSync(`${f}.gz`, gzipSync(Buffer.from(text)));
    await assert.rejects(loadTrace(`${f}.gz`), isBadTrace(line, re));
    assert.throws(() => parseTraceText(text), isBadTrace(line, re));
  });
}

test('accepts CRLF line endings, blank lines, unknown fields and a missing final newline', async () => {
  const text = `${H}\r\n\r\n{"t":100,"dirty":[1],"cpu":0.5}\r\n{"t":200.5,"dirty":[]}`;
  const f = join(dir, 'lenient.trace');
  writeFileSync(f, text);
  const t = await loadTrace(f);
  assert.deepEqual(t.epochs.map((e) => [e.t, e.line]), [[100, 3], [200.5, 4]]);
});

test('rejects a truncated gzip file, naming the last good line', async () => {
  const body = [H, E1, ...Array.from({ length: 2000 }, (_, i) => `{"t":${200 + i},"dirty":[${i % 100}]}`)].join('\n');
  const gz = gzipSync(Buffer.from(body));
  const f = join(dir, 'truncated.trace.gz');
  writeFileSync(f, gz.subarray(0, gz.length - 20));
  await assert.rejects(loadTrace(f), (e: unknown) => {
    assert.ok(e instanceof PresyncError && e.code === 'PRESYNC_ERR_BAD_TRACE');
    assert.match(e.message, /gzip data is truncated or corrupt after line (\d+)/);
    const after = Number(/after line (\d+)/.exec(e.message)![1]);
    assert.ok(after >= 1 && after <= 2002, e.message);
    return true;
  });
  const g = join(dir, 'cut-in-header.trace.gz');
  writeFileSync(g, gz.subarray(0, 12));
  await assert.rejects(loadTrace(g), /trace line 1: gzip data is truncated or corrupt after line 0/);
});

test('rejects garbage after the gzip stream', async () => {
  const f = join(dir, 'gz-garbage.trace.gz');
  writeFileSync(f, Buffer.concat([gzipSync(Buffer.from(`${H}\n${E1}\n`)), Buffer.from('trailing garbage')]));
  await assert.rejects(loadTrace(f), { code: 'PRESYNC_ERR_BAD_TRACE', message: /gzip data is truncated or corrupt/ });
});

test('rejects an absurdly long line before buffering it', async () => {
  const f = join(dir, 'long-line.trace');
  const big = `{"t":100,"dirty":[${Array.from({ length: 500 }, () => 1).join(',')}]}`;
  writeFileSync(f, `${H}\n${E1.replace('100', '50')}\n${big}\n`);
  await assert.rejects(loadTrace(f, { maxLineBytes: 1000 }), isBadTrace(3, /line is longer than 1000 bytes/));
  writeFileSync(f, `${big}${big}`);
  await assert.rejects(loadTrace(f, { maxLineBytes: 1000 }), isBadTrace(1, /longer than 1000 bytes/));
  writeFileSync(f, `${H}\n${E1}\n`);
  assert.equal((await loadTrace(f, { maxLineBytes: 1000 })).epochs.length, 1);
});

test('a missing file is a clear error, not a crash', async () => {
  await assert.rejects(readTrace(join(dir, 'nope.trace')), { code: 'PRESYNC_ERR_BAD_TRACE', message: /cannot read trace file .*nope\.trace/ });
});

test('errors in later lines surface while streaming, after the good epochs', async () => {
  const f = join(dir, 'late-error.trace');
  writeFileSync(f, [H, E1, '{"t":200,"dirty":[5]}', '{"t":300,"dirty":[500]}'].join('\n'));
  const r = await readTrace(f);
  const seen: number[] = [];
  await assert.rejects(
    (async () => {
      for await (const e of r) seen.push(e.t);
    })(),
    isBadTrace(4, /page 500 is out of range/),
  );
  assert.deepEqual(seen, [100, 200]);
});
