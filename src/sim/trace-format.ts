import { ErrorCodes, PresyncError, describeJsonError } from '../core/errors.ts';
import { PageSet, type ReadonlyPageSet } from '../core/pageset.ts';

/**
 * The `presync-trace/1` format, pure parts: line parsing, validation and
 * formatting. No I/O here (see trace.ts), so the same code checks a file
 * streamed from disk, a string in a test, or lines from a socket.
 *
 * JSON Lines. Line 1 is the header:
 *   {"format":"presync-trace/1","pageSize":4096,"pageCount":65536,"epochMs":100,"source":"free text"}
 * with an optional "nonZero": [<dirty list>] naming the pages that hold data
 * at time 0 (absent: assume every page does). Every later line is one epoch:
 *   {"t":<ms since start>,"dirty":[<page>, "<first>-<last>", ...]}
 * `t` is the epoch's end: the line holds the pages dirtied during
 * (t − epochMs, t]. `t` strictly increases; it may be fractional.
 *
 * A dirty list holds page numbers and inclusive ranges as strings "a-b"; the
 * writer emits a range for runs of 3 or more consecutive pages. Entries may
 * come in any order and overlap; readers normalise them. Unknown fields are
 * ignored (forward compatibility); whitespace-only lines are skipped.
 */
export const TRACE_FORMAT = 'presync-trace/1';
/** Longest line a reader accepts; a 1 M-page epoch written as single pages is ~8 MiB. */
export const MAX_TRACE_LINE_BYTES = 64 * 1024 * 1024;
export const MAX_TRACE_PAGE_COUNT = 2 ** 31;
const MAX_PAGE_SIZE = 2 ** 30;

export interface TraceHeader {
  readonly format: typeof TRACE_FORMAT;
  readonly pageSize: number;
  readonly pageCount: number;
  readonly epochMs: number;
  readonly source: string;
  /** Pages non-zero at time 0, as sorted disjoint [first, last] pairs; undefined: all pages. */
  readonly nonZero?: Uint32Array;
}

export interface TraceEpoch {
  /** End of the epoch, ms since the start of the trace. */
  readonly t: number;
  /** Dirty pages as sorted, disjoint, non-adjacent inclusive [first, last] pairs, flattened. */
  readonly ranges: Uint32Array;
  /** 1-based line number in the source, for error messages downstream. */
  readonly line: number;
}

export interface LoadedTrace {
  readonly header: TraceHeader;
  readonly epochs: readonly TraceEpoch[];
}

/** What a writer needs to produce a header. */
export interface TraceHeaderInit {
  readonly pageSize: number;
  readonly pageCount: number;
  readonly epochMs: number;
  readonly source?: string;
  readonly nonZero?: ReadonlyPageSet;
}

export function traceError(line: number, what: string): PresyncError {
  return new PresyncError(ErrorCodes.BAD_TRACE, `trace line ${line}: ${what}`);
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'an object';
  return String(v);
}

function parseObject(text: string, line: number): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw traceError(line, describeJsonError(e));
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw traceError(line, `expected a JSON object, got ${describe(v)}`);
  return v as Record<string, unknown>;
}

const RANGE_RE = /^(\d{1,10})-(\d{1,10})$/;

/**
 * Parses a dirty list into sorted, merged [first, last] pairs. `field` names
 * the list in error messages.
 */
export function parseDirtyList(v: unknown, pageCount: number, line: number, field: string): Uint32Array {
  if (!Array.isArray(v)) throw traceError(line, `"${field}" must be an array, got ${describe(v)}`);
  const pairs = new Uint32Array(v.length * 2);
  let sorted = true;
  for (let i = 0; i < v.length; i++) {
    const e: unknown = v[i];
    let a: number;
    let b: number;
    if (typeof e === 'number') {
      if (!Number.isInteger(e)) throw traceError(line, `${field}[${i}]: page ${e} is not an integer`);
      a = b = e;
    } else if (typeof e === 'string') {
      const m = RANGE_RE.exec(e);
      if (!m) throw traceError(line, `${field}[${i}]: ${describe(e)} is neither a page number nor a range "first-last"`);
      a = Number(m[1]);
      b = Number(m[2]);
      if (b < a) throw traceError(line, `${field}[${i}]: range "${e}" is reversed (first > last)`);
    } else {
      throw traceError(line, `${field}[${i}]: expected a page number or a range "first-last", got ${describe(e)}`);
    }
    if (a < 0 || b >= pageCount) {
      const bad = a < 0 ? a : b;
      throw traceError(line, `${field}[${i}]: page ${bad} is out of range [0, ${pageCount})`);
    }
    pairs[2 * i] = a;
    pairs[2 * i + 1] = b;
    if (i > 0 && a < pairs[2 * i - 2]) sorted = false;
  }
  return normaliseRanges(pairs, sorted);
}

/** Sorts (unless already sorted) and merges overlapping or adjacent pairs. */
function normaliseRanges(pairs: Uint32Array, sorted: boolean): Uint32Array {
  const n = pairs.length / 2;
  let order: number[] | undefined;
  if (!sorted) {
    order = Array.from({ length: n }, (_, i) => i);
    order.sort((x, y) => pairs[2 * x] - pairs[2 * y]);
  }
  const out = new Uint32Array(pairs.length);
  let k = 0;
  for (let j = 0; j < n; j++) {
    const i = order ? order[j] : j;
    const a = pairs[2 * i];
    const b = pairs[2 * i + 1];
    if (k > 0 && a <= out[k - 1] + 1) {
      if (b > out[k - 1]) out[k - 1] = b;
    } else {
      out[k++] = a;
      out[k++] = b;
    }
  }
  return out.slice(0, k);
}

function positiveInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** Parses and validates the header line. */
export function parseHeaderLine(text: string, line = 1): TraceHeader {
  const o = parseObject(text, line);
  if (!('format' in o)) throw traceError(line, `missing "format": the first line must be a header with "format":"${TRACE_FORMAT}"`);
  if (o.format !== TRACE_FORMAT) throw traceError(line, `unsupported format ${describe(o.format)}; this reader understands "${TRACE_FORMAT}"`);
  const { pageSize, pageCount, epochMs, source } = o;
  if (!positiveInteger(pageSize) || pageSize < 512 || pageSize > MAX_PAGE_SIZE || (pageSize & (pageSize - 1)) !== 0) {
    throw traceError(line, `"pageSize" must be a power of two between 512 and ${MAX_PAGE_SIZE}, got ${describe(pageSize)}`);
  }
  if (!positiveInteger(pageCount) || pageCount > MAX_TRACE_PAGE_COUNT) {
    throw traceError(line, `"pageCount" must be a positive integer up to ${MAX_TRACE_PAGE_COUNT}, got ${describe(pageCount)}`);
  }
  if (typeof epochMs !== 'number' || !Number.isFinite(epochMs) || epochMs <= 0) {
    throw traceError(line, `"epochMs" must be a positive number, got ${describe(epochMs)}`);
  }
  if (source !== undefined && typeof source !== 'string') throw traceError(line, `"source" must be a string, got ${describe(source)}`);
  const nonZero = o.nonZero === undefined ? undefined : parseDirtyList(o.nonZero, pageCount, line, 'nonZero');
  return { format: TRACE_FORMAT, pageSize, pageCount, epochMs, source: source ?? '', ...(nonZero ? { nonZero } : {}) };
}

/** Parses and validates one epoch line; `prevT` is the previous epoch's t (−Infinity for the first). */
export function parseEpochLine(text: string, line: number, header: TraceHeader, prevT: number): TraceEpoch {
  const o = parseObject(text, line);
  if (!('t' in o)) {
    const hint = 'format' in o ? ' (a second header?)' : '';
    throw traceError(line, `missing "t"${hint}: each line after the header must be {"t":<ms>,"dirty":[...]}`);
  }
  const t = o.t;
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) throw traceError(line, `"t" must be a non-negative number of ms, got ${describe(t)}`);
  if (t <= prevT) throw traceError(line, `"t" must increase: ${t} follows ${prevT}`);
  if (!('dirty' in o)) throw traceError(line, `missing "dirty"`);
  return { t, ranges: parseDirtyList(o.dirty, header.pageCount, line, 'dirty'), line };
}

/**
 * Stateful line-by-line parser: feed every line in order, then call finish().
 * Keeps the header, the line number and the last t; holds no epochs.
 */
export class TraceLineParser {
  private hdr: TraceHeader | undefined;
  private lineNo = 0;
  private prevT = Number.NEGATIVE_INFINITY;

  get header(): TraceHeader | undefined {
    return this.hdr;
  }

  get line(): number {
    return this.lineNo;
  }

  /** Returns the epoch a line holds; undefined for the header and blank lines. */
  push(text: string): TraceEpoch | undefined {
    this.lineNo++;
    if (text.trim() === '') return undefined;
    if (!this.hdr) {
      this.hdr = parseHeaderLine(text, this.lineNo);
      return undefined;
    }
    const e = parseEpochLine(text, this.lineNo, this.hdr, this.prevT);
    this.prevT = e.t;
    return e;
  }

  /** Throws when the input ended before a header. */
  finish(): TraceHeader {
    if (!this.hdr) throw traceError(Math.max(1, this.lineNo), 'the trace is empty: expected a header line');
    return this.hdr;
  }
}

/** Parses a whole trace held in memory. */
export function parseTraceText(text: string): LoadedTrace {
  const p = new TraceLineParser();
  const epochs: TraceEpoch[] = [];
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  for (const l of lines) {
    const e = p.push(l);
    if (e) epochs.push(e);
  }
  return { header: p.finish(), epochs };
}

/** Encodes a page set as a dirty list (JSON array text); runs of 3+ pages become "a-b". */
export function encodeDirtyList(set: ReadonlyPageSet): string {
  const parts: string[] = [];
  const flush = (a: number, b: number): void => {
    if (b - a >= 2) parts.push(`"${a}-${b}"`);
    else for (let p = a; p <= b; p++) parts.push(String(p));
  };
  const w = set.words();
  let start = -1;
  let prev = -2;
  for (let i = 0; i < w.length; i++) {
    let x = w[i];
    if (x === 0) continue;
    const base = i << 5;
    if (x === 0xffffffff) {
      if (base !== prev + 1) {
        if (start >= 0) flush(start, prev);
        start = base;
      }
      prev = base + 31;
      continue;
    }
    while (x !== 0) {
      const bit = x & -x;
      const p = base + (31 - Math.clz32(bit));
      x ^= bit;
      if (p !== prev + 1) {
        if (start >= 0) flush(start, prev);
        start = p;
      }
      prev = p;
    }
  }
  if (start >= 0) flush(start, prev);
  return `[${parts.join(',')}]`;
}

export function checkHeaderInit(h: TraceHeaderInit): void {
  // Reuse the reader's rules so a writer can never produce what a reader rejects.
  try {
    parseHeaderLine(JSON.stringify({ format: TRACE_FORMAT, pageSize: h.pageSize, pageCount: h.pageCount, epochMs: h.epochMs, source: h.source ?? '' }));
  } catch (e) {
    const msg = e instanceof Error ? e.message.replace(/^trace line 1: /, '') : String(e);
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `cannot write a trace header: ${msg}`);
  }
  if (h.nonZero && h.nonZero.size !== h.pageCount) {
    throw new PresyncError(ErrorCodes.GEOMETRY, `nonZero page set has ${h.nonZero.size} pages, the trace ${h.pageCount}`);
  }
}

export function formatHeaderLine(h: TraceHeaderInit): string {
  checkHeaderInit(h);
  const base = JSON.stringify({ format: TRACE_FORMAT, pageSize: h.pageSize, pageCount: h.pageCount, epochMs: h.epochMs, source: h.source ?? '' });
  return h.nonZero ? `${base.slice(0, -1)},"nonZero":${encodeDirtyList(h.nonZero)}}` : base;
}

export function formatEpochLine(t: number, dirty: ReadonlyPageSet): string {
  return `{"t":${JSON.stringify(t)},"dirty":${encodeDirtyList(dirty)}}`;
}

/** Adds an epoch's (or a header's nonZero) ranges to a page set. */
export function addRanges(into: PageSet, ranges: Uint32Array): void {
  for (let i = 0; i < ranges.length; i += 2) into.addRange(ranges[i], ranges[i + 1]);
}

/** The pages of a ranges array as a page set of `pageCount` pages. */
export function rangesToPageSet(ranges: Uint32Array, pageCount: number): PageSet {
  const s = new PageSet(pageCount);
  addRanges(s, ranges);
  return s;
}

/** Number of pages in a ranges array. */
export function rangesCount(ranges: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < ranges.length; i += 2) n += ranges[i + 1] - ranges[i] + 1;
  return n;
}
