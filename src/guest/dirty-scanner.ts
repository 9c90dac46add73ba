import { availableParallelism } from 'node:os';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { PageSet, type ReadonlyPageSet } from '../core/pageset.ts';
import { digestPages, zeroPageDigest } from '../native/page-digest.ts';
import { nativePageHash } from '../native/pagehash.ts';
import type { SourceImage } from './ram-image.ts';

/** Pages read per pread during a scan: large enough to amortise the syscall. */
const SCAN_CHUNK_PAGES = 1024;
/**
 * Pages hashed per native call on a mapped image: big enough that the call
 * and thread start-up vanish, small enough (a few ms) that scanAsync still
 * reads acknowledgements often. A power of two, so it never straddles a
 * mapping segment.
 */
const MAPPED_CHUNK_PAGES = 8192;

export interface DirtyScannerOptions {
  /** Hashing threads for a mapped image; default min(2, cores). */
  readonly threads?: number;
}

export interface IncrementalScanOptions {
  /** Pages to scan besides the rotating slice (e.g. those the predictor expects to change). */
  readonly hot?: PageSet;
  /** Share of the image the rotating slice covers per scan, (0, 1]; default 1/8. */
  readonly sliceFraction?: number;
  /** Pages the slice may leave out (e.g. stale ones, which will be sent whatever they hold). */
  readonly skip?: ReadonlyPageSet;
}

/**
 * Dirty tracking for a RAM image without help from the guest: a scan hashes
 * pages (64-bit XXH64) and reports those whose digest changed since they were
 * last hashed. A 64-bit digest decides "unchanged"; a 32-bit one would miss a
 * change every few hours at 10 scans/s on 256 MiB.
 *
 * On a mapped image (native build) pages are hashed in place, on several
 * threads; zero pages skip the hash. An incremental scan hashes only the
 * recently written pages, the caller's hot pages and a rotating slice of the
 * rest: a change in a cold page is then seen within 1/sliceFraction scans
 * instead of the next one. Whoever needs certainty (the final copy) calls
 * scan(), which is always full.
 */
export class DirtyScanner {
  readonly digests: BigUint64Array;
  private readonly buf: Buffer;
  private scanned = false;
  private readonly threads: number;
  private readonly list: Uint32Array;
  /** One result list per concurrent lane of scanAsync. */
  private readonly lists: Uint32Array[];
  /** Pages hashed so far, for metrics. */
  pagesHashed = 0;
  /** Next page of the rotating slice. */
  private cursor = 0;
  /** Pages found dirty by the last few scans: scanned every incremental scan. */
  private recent: PageSet[] = [];

  constructor(private readonly image: SourceImage, opts: DirtyScannerOptions = {}) {
    this.digests = new BigUint64Array(image.geometry.pageCount);
    this.buf = Buffer.allocUnsafe(SCAN_CHUNK_PAGES * image.geometry.pageSize);
    this.threads = Math.max(1, Math.floor(opts.threads ?? Math.min(2, availableParallelism())));
    this.list = new Uint32Array(MAPPED_CHUNK_PAGES);
    this.lists = [this.list];
    for (let t = 1; t < this.threads; t++) this.lists.push(new Uint32Array(MAPPED_CHUNK_PAGES));
  }

  get hasBaseline(): boolean {
    return this.scanned;
  }

  /**
   * Full scan. Returns the pages whose content changed since the last scan
   * (every page on the first scan) and updates the stored digests.
   */
  scan(): PageSet {
    if (this.busy) throw new PresyncError(ErrorCodes.INTERNAL, 'a dirty scan is already running on this image; await it first');
    const dirty = new PageSet(this.image.geometry.pageCount);
    this.beginScan();
    this.scanRange(0, this.image.geometry.pageCount, dirty);
    this.runs = undefined;
    this.finish(dirty);
    return dirty;
  }

  /**
   * The same scan, yielding to the event loop between chunks so that the
   * target's acknowledgements and pongs are read when they arrive: a scan that
   * blocks for 100 ms would look like 100 ms of network delay.
   */
  async scanAsync(yieldEveryPages = MAPPED_CHUNK_PAGES, opts: { readonly lanes?: number } = {}): Promise<PageSet> {
    const { pageCount } = this.image.geometry;
    const dirty = new PageSet(pageCount);
    const step = Math.max(SCAN_CHUNK_PAGES, yieldEveryPages);
    this.enter();
    try {
      this.beginScan();
      // As many chunks in flight as the blocking scan has threads: each lane
      // hashes on its own libuv thread, so the scan takes about as long as the
      // blocking one while the event loop stays free.
      let next = 0;
      const lane = async (list: Uint32Array): Promise<void> => {
        while (next < pageCount) {
          const first = next;
          next = Math.min(pageCount, next + step);
          await this.scanRangeAsync(first, next, dirty, list);
        }
      };
      const lanes = Math.max(1, Math.min(this.lists.length, Math.floor(opts.lanes ?? this.lists.length)));
      await Promise.all(this.lists.slice(0, lanes).map(lane));
    } finally {
      this.runs = undefined;
      this.busy = false;
    }
    this.finish(dirty);
    return dirty;
  }

  /** True while an asynchronous scan runs (it may be hashing on another thread). */
  get scanning(): boolean {
    return this.busy;
  }

  private busy = false;

  private enter(): void {
    // Two scans at once would race on the digest table (one may run on a worker thread).
    if (this.busy) throw new PresyncError(ErrorCodes.INTERNAL, 'a dirty scan is already running on this image; await it first');
    this.busy = true;
  }

  /**
   * One chunk at a time: on a mapped image hashed on a libuv thread (the
   * event loop sends pages and reads acknowledgements meanwhile), else here,
   * yielding to the event loop after each chunk.
   */
  private async scanRangeAsync(from: number, to: number, dirty: PageSet, list = this.list): Promise<void> {
    const { pageSize } = this.image.geometry;
    const async = nativePageHash?.hashCompareAsync;
    while (from < to) {
      // A chunk stops at the end of its file (a view never spans two).
      const n = Math.min(MAPPED_CHUNK_PAGES, to - from, this.image.segmentEnd(from) - from);
      // A thread hop costs tens of µs: short runs are hashed right here.
      const v = async && n >= 256 ? this.image.view(from, n) : null;
      if (v) {
        const runs: Array<[number, number]> = [];
        this.eachRun(from, n, dirty, (s, e) => runs.push([s, e]));
        for (const [s, e] of runs) {
          let k: number;
          try {
            k = await async!(v.subarray((s - from) * pageSize, (e - from) * pageSize), pageSize, this.digests, s, !this.scanned, list, 0);
          } catch (err) {
            throw this.image.sizeErrorFrom(err);
          }
          for (let i = 0; i < k; i++) dirty.add(list[i]);
        }
      } else {
        this.scanRange(from, from + n, dirty);
        if (n >= 256) await new Promise<void>((r) => setImmediate(r));
      }
      from += n;
    }
  }

  /**
   * Hashes the pages dirty in the last scans, `hot`, and the next slice of
   * the image; reports which of those changed. Until a first full scan there
   * is no baseline, so that one is full.
   */
  async scanIncremental(o: IncrementalScanOptions = {}): Promise<PageSet> {
    const { pageCount } = this.image.geometry;
    if (!this.scanned) return this.scanAsync();
    const frac = Math.min(1, Math.max(1 / pageCount, o.sliceFraction ?? 1 / 8));
    const slice = Math.min(pageCount, Math.ceil(pageCount * frac));
    const dirty = new PageSet(pageCount);
    this.enter();
    try {
      this.beginScan(false);
      await this.incremental(slice, o, dirty);
    } finally {
      this.runs = undefined;
      this.busy = false;
    }
    this.remember(dirty);
    return dirty;
  }

  /**
   * Hashes only `pages` (sorted ascending) and reports which changed: a close
   * look at a small hot set, cheap enough to repeat every few milliseconds.
   * Needs a baseline (a full scan first).
   */
  scanPages(pages: Uint32Array): PageSet {
    const dirty = new PageSet(this.image.geometry.pageCount);
    if (!this.scanned) throw new PresyncError(ErrorCodes.BAD_PHASE, 'scanPages needs a full scan first');
    this.enter();
    try {
      this.beginScan(false);
      this.scanList(pages, dirty);
    } finally {
      this.runs = undefined;
      this.busy = false;
    }
    return dirty;
  }

  /** Hashes the listed pages (ascending) in runs of consecutive indices. */
  private scanList(pages: Uint32Array, dirty: PageSet): void {
    let i = 0;
    while (i < pages.length) {
      let j = i + 1;
      while (j < pages.length && pages[j] === pages[j - 1] + 1 && j - i < MAPPED_CHUNK_PAGES) j++;
      this.scanRange(pages[i], pages[j - 1] + 1, dirty);
      i = j;
    }
    this.pagesHashed += pages.length;
  }

  private async incremental(slice: number, o: IncrementalScanOptions, dirty: PageSet): Promise<void> {
    const { pageCount } = this.image.geometry;
    // The rotating slice, in chunks, possibly wrapping around; runs of skipped pages left out.
    let left = slice;
    while (left > 0) {
      const end = Math.min(pageCount, this.cursor + Math.min(left, MAPPED_CHUNK_PAGES));
      if (!o.skip) await this.scanRangeAsync(this.cursor, end, dirty);
      else {
        let p = this.cursor;
        while (p < end) {
          while (p < end && o.skip.has(p)) p++;
          let q = p;
          while (q < end && !o.skip.has(q)) q++;
          if (q > p) await this.scanRangeAsync(p, q, dirty);
          p = q;
        }
      }
      left -= end - this.cursor;
      this.cursor = end === pageCount ? 0 : end;
    }
    // Recently written and hot pages, in runs of consecutive indices.
    const extra = new PageSet(pageCount);
    for (const s of this.recent) extra.unionWith(s);
    if (o.hot) extra.unionWith(o.hot);
    this.scanList(extra.toArray(), dirty);
  }

  private finish(dirty: PageSet): void {
    this.pagesHashed += this.image.geometry.pageCount;
    // The first scan reports every page: that is no sign of recent writes.
    if (this.scanned) this.remember(dirty);
    this.scanned = true;
  }

  private remember(dirty: PageSet): void {
    this.recent.push(dirty);
    if (this.recent.length > 4) this.recent.shift();
  }

  /**
   * Calls `data` for each run of data pages in [from, from+n) and settles the
   * hole pages here: a hole is a zero page, dirty if its digest was not that.
   */
  private eachRun(from: number, n: number, dirty: PageSet, data: (s: number, e: number) => void): void {
    const runs = this.runsWithin(from, from + n);
    const zd = zeroPageDigest(this.image.geometry.pageSize);
    let p = from;
    const holes = (end: number): void => {
      for (; p < end; p++) {
        if (!this.scanned || this.digests[p] !== zd) {
          this.digests[p] = zd;
          dirty.add(p);
        }
      }
    };
    for (let i = 0; i + 1 < runs.length; i += 2) {
      holes(runs[i]);
      data(runs[i], runs[i + 1]);
      p = runs[i + 1];
    }
    holes(from + n);
  }

  /**
   * Data runs of the whole image, looked up once per scan: SEEK_HOLE on tmpfs
   * walks the page cache up to the next hole, so asking per chunk would cost
   * a walk to the end of a dense image for every chunk.
   */
  private runs: number[] | undefined;

  /** The last lookup and the file's allocated size then; an incremental scan reuses it while that is unchanged. */
  private lastRuns: { runs: number[]; allocated: number } | undefined;

  private beginScan(full = true): void {
    // Every scan first checks the image still has its size (growth would be lost, shrinking would fault).
    this.image.checkSize();
    const allocated = this.image.allocatedBytes();
    if (!full && this.lastRuns && this.lastRuns.allocated === allocated) {
      // No page allocated or freed since: the holes are where they were. (A
      // hole filled while another page was freed would be missed until the
      // next full scan, which always looks again, as the final one does.)
      this.runs = this.lastRuns.runs;
      return;
    }
    this.runs = this.image.dataRuns(0, this.image.geometry.pageCount);
    this.lastRuns = { runs: this.runs, allocated };
  }

  private runsWithin(from: number, to: number): number[] {
    const all = this.runs ?? this.image.dataRuns(from, to - from);
    const out: number[] = [];
    // Binary search for the first run ending after `from`.
    let lo = 0;
    let hi = all.length >> 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (all[2 * mid + 1] <= from) lo = mid + 1;
      else hi = mid;
    }
    for (let i = 2 * lo; i + 1 < all.length && all[i] < to; i += 2) out.push(Math.max(from, all[i]), Math.min(to, all[i + 1]));
    return out;
  }

  private readonly fresh = new BigUint64Array(SCAN_CHUNK_PAGES);

  /** Scans pages [from, to): mapped in place when possible, else through the read buffer. */
  private scanRange(from: number, to: number, dirty: PageSet): void {
    const { pageSize } = this.image.geometry;
    while (from < to) {
      const n = Math.min(MAPPED_CHUNK_PAGES, to - from, this.image.segmentEnd(from) - from);
      const v = nativePageHash ? this.image.view(from, n) : null;
      if (v) {
        // Holes are zero pages: reading them through the mapping would allocate them.
        this.eachRun(from, n, dirty, (s, e) => {
          let k: number;
          try {
            k = nativePageHash!.hashCompare(v.subarray((s - from) * pageSize, (e - from) * pageSize), pageSize, this.digests, s, !this.scanned, this.list, 0, this.threads);
          } catch (err) {
            throw this.image.sizeErrorFrom(err);
          }
          for (let i = 0; i < k; i++) dirty.add(this.list[i]);
        });
        from += n;
        continue;
      }
      const m = Math.min(SCAN_CHUNK_PAGES, to - from);
      this.scanChunk(from, m, dirty);
      from += m;
    }
  }

  private scanChunk(first: number, n: number, dirty: PageSet): void {
    const { pageSize } = this.image.geometry;
    const bytes = this.image.readPages(first, n, this.buf);
    if (nativePageHash) {
      // Hash, compare and list the changed pages in one native call.
      const k = nativePageHash.hashCompare(bytes, pageSize, this.digests, first, !this.scanned, this.list, 0);
      for (let i = 0; i < k; i++) dirty.add(this.list[i]);
      return;
    }
    const fresh = this.fresh;
    digestPages(bytes, pageSize, 0, n, fresh, 0);
    for (let i = 0; i < n; i++) {
      const p = first + i;
      if (!this.scanned || this.digests[p] !== fresh[i]) {
        dirty.add(p);
        this.digests[p] = fresh[i];
      }
    }
  }
}
