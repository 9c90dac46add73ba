import { PageSet } from '../core/pageset.ts';
import { digestPages } from '../wire/digest.ts';
import { nativePageHash } from '../native/pagehash.ts';
import type { RamImageReader } from './ram-image.ts';

/** Pages read per pread during a scan: large enough to amortise the syscall. */
const SCAN_CHUNK_PAGES = 1024;

/**
 * Dirty tracking for a RAM image without help from the guest: every scan
 * hashes every page (64-bit XXH64) and reports the pages whose digest changed
 * since the previous scan. A 64-bit digest decides "unchanged"; a 32-bit one
 * would miss a change every few hours at 10 scans/s on 256 MiB.
 */
export class DirtyScanner {
  readonly digests: BigUint64Array;
  private readonly buf: Buffer;
  private scanned = false;
  /** Pages hashed so far, for metrics. */
  pagesHashed = 0;

  constructor(private readonly image: RamImageReader) {
    this.digests = new BigUint64Array(image.geometry.pageCount);
    this.buf = Buffer.allocUnsafe(SCAN_CHUNK_PAGES * image.geometry.pageSize);
  }

  get hasBaseline(): boolean {
    return this.scanned;
  }

  /**
   * Full scan. Returns the pages whose content changed since the last scan
   * (every page on the first scan) and updates the stored digests.
   */
  scan(): PageSet {
    const dirty = new PageSet(this.image.geometry.pageCount);
    for (let first = 0; first < this.image.geometry.pageCount; first += SCAN_CHUNK_PAGES) this.scanChunk(first, dirty);
    this.pagesHashed += this.image.geometry.pageCount;
    this.scanned = true;
    return dirty;
  }

  /**
   * The same scan, yielding to the event loop between chunks so that the
   * target's acknowledgements and pongs are read when they arrive: a scan that
   * blocks for 100 ms would look like 100 ms of network delay.
   */
  async scanAsync(yieldEveryPages = 1024): Promise<PageSet> {
    const dirty = new PageSet(this.image.geometry.pageCount);
    let since = 0;
    for (let first = 0; first < this.image.geometry.pageCount; first += SCAN_CHUNK_PAGES) {
      this.scanChunk(first, dirty);
      since += SCAN_CHUNK_PAGES;
      if (since >= yieldEveryPages) {
        since = 0;
        await new Promise<void>((r) => setImmediate(r));
      }
    }
    this.pagesHashed += this.image.geometry.pageCount;
    this.scanned = true;
    return dirty;
  }

  private readonly fresh = new BigUint64Array(SCAN_CHUNK_PAGES);
  private readonly changed = new Uint32Array(SCAN_CHUNK_PAGES);

  private scanChunk(first: number, dirty: PageSet): void {
    const { pageSize, pageCount } = this.image.geometry;
    const n = Math.min(SCAN_CHUNK_PAGES, pageCount - first);
    const bytes = this.image.readPages(first, n, this.buf);
    if (nativePageHash) {
      // Hash, compare and list the changed pages in one native call.
      const k = nativePageHash.hashCompare(bytes, pageSize, this.digests, first, !this.scanned, this.changed, 0);
      for (let i = 0; i < k; i++) dirty.add(this.changed[i]);
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
