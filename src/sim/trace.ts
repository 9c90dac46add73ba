import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { pipeline, Transform, type TransformCallback, type Writable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { ReadonlyPageSet } from '../core/pageset.ts';
import {
  formatEpochLine,
  formatHeaderLine,
  MAX_TRACE_LINE_BYTES,
  TraceLineParser,
  traceError,
  type LoadedTrace,
  type TraceEpoch,
  type TraceHeader,
  type TraceHeaderInit,
} from './trace-format.ts';

/**
 * Reading and writing `presync-trace/1` files (format: see trace-format.ts).
 * Files may be gzip-compressed; readers detect it by the magic bytes 1f 8b,
 * never by the name.
 */
export * from './trace-format.ts';

export interface TraceReadOptions {
  /** Reject lines longer than this many bytes (default 64 MiB). */
  readonly maxLineBytes?: number;
}

/** An open trace: the header, then the epochs one line at a time (iterate once). */
export interface TraceReader extends AsyncIterable<TraceEpoch> {
  readonly path: string;
  readonly header: TraceHeader;
  readonly gzip: boolean;
  /** Stops reading; needed only when not iterating to the end. */
  close(): void;
}

/** Passes bytes through, failing once a line grows past the limit, before readline buffers it. */
class LineLengthGuard extends Transform {
  private run = 0;
  private newlines = 0;
  constructor(private readonly max: number) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf(10, from);
      const len = (nl < 0 ? chunk.length : nl) - from;
      if (this.run + len > this.max) {
        cb(traceError(this.newlines + 1, `line is longer than ${this.max} bytes; is this a presync trace?`));
        return;
      }
      if (nl < 0) {
        this.run += len;
        break;
      }
      this.run = 0;
      this.newlines++;
      from = nl + 1;
    }
    cb(null, chunk);
  }
}

async function sniffGzip(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'r');
    const b = Buffer.alloc(2);
    const { bytesRead } = await fh.read(b, 0, 2, 0);
    return bytesRead === 2 && b[0] === 0x1f && b[1] === 0x8b;
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_TRACE, `cannot read trace file ${path}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  } finally {
    await fh?.close();
  }
}

function readError(e: unknown, path: string, gzip: boolean, line: number): PresyncError {
  if (e instanceof PresyncError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const code = (e as { code?: unknown } | null)?.code;
  if (gzip && typeof code === 'string' && code.startsWith('Z_')) {
    return new PresyncError(ErrorCodes.BAD_TRACE, `trace line ${line + 1}: gzip data is truncated or corrupt after line ${line} (${msg}) in ${path}`, { cause: e });
  }
  return new PresyncError(ErrorCodes.BAD_TRACE, `cannot read trace file ${path}: ${msg}`, { cause: e });
}

/**
 * Opens a trace and reads its header; the epochs stream after it, one line
 * at a time, through node:readline over the (possibly gunzipped) file.
 * Every problem becomes PRESYNC_ERR_BAD_TRACE naming the line.
 */
export async function readTrace(path: string, opts: TraceReadOptions = {}): Promise<TraceReader> {
  const gzip = await sniffGzip(path);
  const guard = new LineLengthGuard(opts.maxLineBytes ?? MAX_TRACE_LINE_BYTES);
  const file = createReadStream(path);
  // pipeline destroys every stage with the first error; readline rethrows it from the iterator.
  if (gzip) pipeline(file, createGunzip(), guard, () => {});
  else pipeline(file, guard, () => {});
  const rl = createInterface({ input: guard, crlfDelay: Number.POSITIVE_INFINITY });
  const lines = rl[Symbol.asyncIterator]();
  const parser = new TraceLineParser();
  const close = (): void => {
    rl.close();
    file.destroy();
    guard.destroy();
  };

  const next = async (): Promise<IteratorResult<string>> => {
    try {
      return await lines.next();
    } catch (e) {
      close();
      throw readError(e, path, gzip, parser.line);
    }
  };

  let header: TraceHeader;
  try {
    while (!parser.header) {
      const r = await next();
      if (r.done) break;
      parser.push(r.value);
    }
    header = parser.finish();
  } catch (e) {
    close();
    throw e;
  }

  let started = false;
  return {
    path,
    header,
    gzip,
    close,
    async *[Symbol.asyncIterator](): AsyncGenerator<TraceEpoch> {
      if (started) throw new PresyncError(ErrorCodes.INTERNAL, `trace ${path} is already being read; open it again`);
      started = true;
      try {
        for (;;) {
          const r = await next();
          if (r.done) return;
          const e = parser.push(r.value);
          if (e) yield e;
        }
      } finally {
        close();
      }
    },
  };
}

/** Reads a whole trace into memory (epochs as compact ranges). */
export async function loadTrace(path: string, opts: TraceReadOptions = {}): Promise<LoadedTrace> {
  const r = await readTrace(path, opts);
  const epochs: TraceEpoch[] = [];
  for await (const e of r) epochs.push(e);
  return { header: r.header, epochs };
}

export interface TraceWriteOptions {
  /** Compress; default: when the path ends in ".gz". */
  readonly gzip?: boolean;
}

/**
 * Writes a trace: the header at open, then one line per append. Appends wait
 * for the stream to drain, so a slow disk slows the recorder instead of
 * filling memory.
 */
export class TraceWriter {
  private lastT = Number.NEGATIVE_INFINITY;
  private closed = false;
  private failure: Error | undefined;

  private constructor(
    readonly path: string,
    readonly header: TraceHeaderInit,
    private readonly out: Writable,
    private readonly done: Promise<void>,
  ) {
    done.catch((e: unknown) => {
      this.failure = e instanceof Error ? e : new Error(String(e));
    });
  }

  static async open(path: string, header: TraceHeaderInit, opts: TraceWriteOptions = {}): Promise<TraceWriter> {
    const headerLine = formatHeaderLine(header);
    let fh;
    try {
      fh = await open(path, 'w');
    } catch (e) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `cannot create trace file ${path}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    const file = fh.createWriteStream();
    const gzip = opts.gzip ?? path.endsWith('.gz');
    let out: Writable = file;
    let done: Promise<void>;
    if (gzip) {
      const z = createGzip();
      out = z;
      done = new Promise((resolve, reject) => pipeline(z, file, (err) => (err ? reject(err) : resolve())));
    } else {
      done = new Promise((resolve, reject) => {
        file.once('error', reject);
        file.once('close', () => resolve());
      });
    }
    const w = new TraceWriter(path, header, out, done);
    await w.writeLine(headerLine);
    return w;
  }

  private async writeLine(s: string): Promise<void> {
    if (this.failure) throw this.writeError(this.failure);
    if (!this.out.write(`${s}\n`)) {
      await Promise.race([once(this.out, 'drain'), this.done]);
      if (this.failure) throw this.writeError(this.failure);
    }
  }

  private writeError(e: Error): PresyncError {
    return new PresyncError(ErrorCodes.BAD_ARGUMENT, `writing trace ${this.path} failed: ${e.message}`, { cause: e });
  }

  /** Appends the epoch ending at tMs (pages dirtied in (tMs − epochMs, tMs]). */
  async append(tMs: number, dirty: ReadonlyPageSet): Promise<void> {
    if (this.closed) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `trace ${this.path} is closed`);
    if (!Number.isFinite(tMs) || tMs < 0 || tMs <= this.lastT) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `trace epoch time must be a non-negative number above ${this.lastT}, got ${tMs}`);
    }
    if (dirty.size !== this.header.pageCount) {
      throw new PresyncError(ErrorCodes.GEOMETRY, `dirty set has ${dirty.size} pages, the trace ${this.header.pageCount}`);
    }
    this.lastT = tMs;
    await this.writeLine(formatEpochLine(tMs, dirty));
  }

  /** Flushes and closes the file; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return this.done.catch((e: unknown) => Promise.reject(this.writeError(e instanceof Error ? e : new Error(String(e)))));
    this.closed = true;
    this.out.end();
    try {
      await this.done;
    } catch (e) {
      throw this.writeError(e instanceof Error ? e : new Error(String(e)));
    }
  }
}
