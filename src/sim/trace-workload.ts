import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { PageSet, type ReadonlyPageSet } from '../core/pageset.ts';
import type { Geometry } from '../core/types.ts';
import type { Workload } from './workload.ts';
import { checkWritesArgs } from './workloads/composed.ts';
import {
  addRanges,
  loadTrace,
  TRACE_FORMAT,
  TraceWriter,
  type LoadedTrace,
  type TraceEpoch,
  type TraceReadOptions,
} from './trace.ts';

/**
 * When a replayed line's pages count as written. A line only says its pages
 * were dirtied somewhere in (t − epochMs, t].
 *
 * - 'at-end': at the instant t, when the recorder observed them.
 *   writes(from, to) returns the lines with from ≤ t < to. A simulator whose
 *   epochs line up with the trace's sees each line one epoch after the one
 *   it was recorded in: writes(t − epochMs, t) misses line t, and
 *   writes(t, t + epochMs) returns it.
 * - 'within' (default): just before t, inside the epoch the line describes.
 *   writes(from, to) returns the lines with from < t ≤ to, so
 *   writes(t − epochMs, t) returns exactly line t: a recorded workload
 *   replays in step with the original.
 */
export type TraceAttribution = 'at-end' | 'within';

export interface TraceReplayOptions {
  readonly attribution?: TraceAttribution;
  /** Name reported by the workload; default "trace". */
  readonly name?: string;
}

/**
 * A Workload that replays a loaded trace. writes() binary-searches the epoch
 * times and adds each matching line's ranges word-at-a-time: cost is the
 * number of ranges written, not the guest size. Before the first line and
 * after the last, nothing is written.
 *
 * initialNonZero(): the header's "nonZero" pages when present, otherwise
 * every page (conservative: an unknown guest may hold data anywhere).
 */
export function traceWorkload(trace: LoadedTrace, opts: TraceReplayOptions = {}): Workload {
  const h = trace.header;
  const attribution = opts.attribution ?? 'within';
  if (attribution !== 'at-end' && attribution !== 'within') {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `trace attribution must be "at-end" or "within", got ${String(attribution)}`);
  }
  const name = opts.name ?? 'trace';
  const geometry: Geometry = { pageSize: h.pageSize, pageCount: h.pageCount };
  const epochs = trace.epochs;
  const times = new Float64Array(epochs.length);
  epochs.forEach((e, i) => {
    if (!(e.t > (i > 0 ? times[i - 1] : Number.NEGATIVE_INFINITY))) {
      throw new PresyncError(ErrorCodes.BAD_TRACE, `trace epoch ${i} (line ${e.line}): t ${e.t} does not increase`);
    }
    const r = e.ranges;
    if (r.length % 2 !== 0 || (r.length > 0 && r[r.length - 1] >= h.pageCount)) {
      throw new PresyncError(ErrorCodes.BAD_TRACE, `trace epoch ${i} (line ${e.line}): pages outside [0, ${h.pageCount})`);
    }
    times[i] = e.t;
  });
  const nonZero = h.nonZero ? new PageSet(h.pageCount) : PageSet.full(h.pageCount);
  if (h.nonZero) addRanges(nonZero, h.nonZero);

  // First index whose time is ≥ x (strict: > x).
  const lowerBound = (x: number, strict: boolean): number => {
    let lo = 0;
    let hi = times.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (strict ? times[mid] <= x : times[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const within = attribution === 'within';
  const span = epochs.length > 0 ? `${epochs.length} epochs up to t=${times[times.length - 1]} ms` : 'no epochs';

  return {
    name,
    geometry,
    initialNonZero(): ReadonlyPageSet {
      return nonZero.clone();
    },
    writes(fromMs: number, toMs: number, into: PageSet): void {
      checkWritesArgs(name, geometry, fromMs, toMs, into);
      if (!(toMs > fromMs)) return;
      const i0 = lowerBound(fromMs, within);
      const i1 = lowerBound(toMs, within);
      for (let i = i0; i < i1; i++) addRanges(into, epochs[i].ranges);
    },
    describe(): string {
      const src = h.source ? ` from ${h.source}` : '';
      return `replayed ${TRACE_FORMAT} trace${src}: ${span}, ${h.epochMs} ms epochs, ${attribution} attribution`;
    },
  };
}

/** Loads a trace file and replays it. */
export async function loadTraceWorkload(path: string, opts: TraceReplayOptions & TraceReadOptions = {}): Promise<Workload> {
  return traceWorkload(await loadTrace(path, opts), { name: opts.name ?? `trace:${path}`, ...(opts.attribution ? { attribution: opts.attribution } : {}) });
}

export interface RecordOptions {
  readonly epochMs: number;
  readonly durationMs: number;
  readonly source?: string;
}

function checkRecord(o: RecordOptions): number {
  if (!(Number.isFinite(o.epochMs) && o.epochMs > 0) || !(Number.isFinite(o.durationMs) && o.durationMs >= 0)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `recording needs epochMs > 0 and durationMs ≥ 0, got ${o.epochMs} and ${o.durationMs}`);
  }
  const n = Math.ceil(o.durationMs / o.epochMs);
  if (n > 10_000_000) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `recording of ${n} epochs is too long`);
  return n;
}

/**
 * Epoch i of a recording covers [t − epochMs, t) with t = min((i+1)·epochMs,
 * durationMs): writes() over that interval, stored as line t. One line per
 * epoch, empty ones included, so the timeline is explicit.
 */
function* recordEpochs(w: Workload, o: RecordOptions): Generator<{ t: number; dirty: PageSet }> {
  const n = checkRecord(o);
  const dirty = new PageSet(w.geometry.pageCount);
  let from = 0;
  for (let i = 1; i <= n; i++) {
    const t = Math.min(i * o.epochMs, o.durationMs);
    if (t <= from) continue;
    dirty.clear();
    w.writes(from, t, dirty);
    yield { t, dirty };
    from = t;
  }
}

function copy(s: ReadonlyPageSet): PageSet {
  return new PageSet(s.size, s.words().slice());
}

function rangesOf(s: PageSet): Uint32Array {
  const r = s.ranges();
  const out = new Uint32Array(r.length * 2);
  r.forEach(([a, b], i) => {
    out[2 * i] = a;
    out[2 * i + 1] = b;
  });
  return out;
}

/** Records a workload into an in-memory trace (the header carries its initial non-zero pages). */
export function recordWorkload(w: Workload, o: RecordOptions): LoadedTrace {
  const epochs: TraceEpoch[] = [];
  let line = 1;
  for (const { t, dirty } of recordEpochs(w, o)) epochs.push({ t, ranges: rangesOf(dirty), line: ++line });
  const header = {
    format: TRACE_FORMAT,
    pageSize: w.geometry.pageSize,
    pageCount: w.geometry.pageCount,
    epochMs: o.epochMs,
    source: o.source ?? `recorded from ${w.name}: ${w.describe()}`,
    nonZero: rangesOf(copy(w.initialNonZero())),
  } as const;
  return { header, epochs };
}

/** Records a workload straight into a trace file; returns the number of epochs written. */
export async function recordWorkloadToFile(w: Workload, path: string, o: RecordOptions & { readonly gzip?: boolean }): Promise<number> {
  checkRecord(o);
  const header = {
    pageSize: w.geometry.pageSize,
    pageCount: w.geometry.pageCount,
    epochMs: o.epochMs,
    source: o.source ?? `recorded from ${w.name}: ${w.describe()}`,
    nonZero: w.initialNonZero(),
  };
  const writer = await TraceWriter.open(path, header, o.gzip === undefined ? {} : { gzip: o.gzip });
  let n = 0;
  try {
    for (const { t, dirty } of recordEpochs(w, o)) {
      await writer.append(t, dirty);
      n++;
    }
  } finally {
    await writer.close();
  }
  return n;
}
