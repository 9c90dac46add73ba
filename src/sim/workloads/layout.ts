import { PageSet } from '../../core/pageset.ts';
import { Rng } from '../../core/rng.ts';
import { hashSeed } from './time.ts';

/** A contiguous run of guest pages [start, start + pages). */
export interface Region {
  readonly start: number;
  readonly pages: number;
}

export interface RegionRequest {
  readonly name: string;
  /** Wanted size in pages (at least 1 is always granted). */
  readonly pages: number;
}

export interface Layout {
  readonly regions: ReadonlyMap<string, Region>;
  /** Every placed region: the pages holding data when the run starts. */
  readonly nonZero: PageSet;
  region(name: string): Region;
}

const LAYOUT_STREAM = 0x1a70;

/** Pages needed for `bytes` bytes, at least 1. */
export function pagesFor(bytes: number, pageSize: number): number {
  return Math.max(1, Math.ceil(bytes / pageSize));
}

/**
 * Places regions in a guest of `pageCount` pages, deterministically from the
 * seed: in seeded order with seeded free gaps between them, as a long-running
 * OS scatters its allocations. With `pinFirst` the first request sits at page
 * 0 (a kernel is loaded low in physical memory).
 *
 * `filler` extra pages (other processes, page cache) are split into three
 * regions so that about that many more pages start non-zero.
 *
 * When the requests do not fit (tiny test guests) every region shrinks in
 * proportion, keeping at least one page; with more regions than pages,
 * regions share pages, which keeps every region inside the guest.
 */
export function placeRegions(pageCount: number, seed: number, requests: readonly RegionRequest[], filler = 0, pinFirst = false): Layout {
  const rng = new Rng(hashSeed(seed, LAYOUT_STREAM, 0));
  const all: RegionRequest[] = [...requests];
  const fill = Math.max(0, Math.floor(filler));
  if (fill > 0) {
    const third = Math.max(1, Math.floor(fill / 3));
    all.push({ name: '#filler-0', pages: third }, { name: '#filler-1', pages: third }, { name: '#filler-2', pages: Math.max(1, fill - 2 * third) });
  }
  let sizes = all.map((r) => Math.max(1, Math.floor(r.pages)));
  let total = sizes.reduce((a, b) => a + b, 0);
  if (total > pageCount) {
    sizes = sizes.map((s) => Math.max(1, Math.floor((s * pageCount) / total)));
    total = sizes.reduce((a, b) => a + b, 0);
  }

  const order = all.map((_, i) => i);
  const lo = pinFirst ? 1 : 0;
  for (let i = order.length - 1; i > lo; i--) {
    const j = lo + rng.int(i + 1 - lo);
    [order[i], order[j]] = [order[j], order[i]];
  }

  const placed = new Map<string, Region>();
  if (total > pageCount) {
    // More regions than pages: one page each, wrapping around the guest.
    order.forEach((idx, pos) => placed.set(all[idx].name, { start: pos % pageCount, pages: 1 }));
  } else {
    const free = pageCount - total;
    const weights = order.map(() => rng.next() + 1e-3);
    weights.push(rng.next() + 1e-3);
    const wsum = weights.reduce((a, b) => a + b, 0);
    let at = 0;
    order.forEach((idx, pos) => {
      at += pos === 0 && pinFirst ? 0 : Math.floor((free * weights[pos]) / wsum);
      placed.set(all[idx].name, { start: at, pages: sizes[idx] });
      at += sizes[idx];
    });
  }

  const nonZero = new PageSet(pageCount);
  for (const r of placed.values()) nonZero.addRange(r.start, r.start + r.pages - 1);
  const regions = new Map([...placed].filter(([name]) => !name.startsWith('#')));
  return {
    regions,
    nonZero,
    region(name: string): Region {
      const r = regions.get(name);
      if (!r) throw new RangeError(`no region named ${name}`);
      return r;
    },
  };
}

/**
 * Adds `count` pages of a region starting at region-relative `offset`,
 * wrapping at the region's end (ring buffers, pools of buffers).
 */
export function addWrapped(into: PageSet, region: Region, offset: number, count: number): void {
  if (count <= 0) return;
  if (count >= region.pages) {
    into.addRange(region.start, region.start + region.pages - 1);
    return;
  }
  const a = ((offset % region.pages) + region.pages) % region.pages;
  const end = a + count;
  if (end <= region.pages) {
    into.addRange(region.start + a, region.start + end - 1);
  } else {
    into.addRange(region.start + a, region.start + region.pages - 1);
    into.addRange(region.start, region.start + (end - region.pages) - 1);
  }
}

/**
 * Adds the pages holding bytes [offset, offset + length) of a ring buffer of
 * `ringBytes` bytes laid out from the region's first page. The ring is capped
 * at the region, which may have shrunk in a small guest.
 */
export function addRingBytes(into: PageSet, region: Region, pageSize: number, ringBytes: number, offset: number, length: number): void {
  if (length <= 0) return;
  const ringPages = Math.min(region.pages, Math.max(1, Math.ceil(ringBytes / pageSize)));
  const ring = ringPages * pageSize < ringBytes ? ringPages * pageSize : ringBytes;
  const sub: Region = { start: region.start, pages: ringPages };
  if (length >= ring) {
    addWrapped(into, sub, 0, ringPages);
    return;
  }
  const first = offset % ring;
  const last = first + length - 1;
  const p0 = Math.floor(first / pageSize);
  if (last < ring) {
    addWrapped(into, sub, p0, Math.floor(last / pageSize) - p0 + 1);
  } else {
    addWrapped(into, sub, p0, ringPages - p0);
    addWrapped(into, sub, 0, Math.floor((last - ring) / pageSize) + 1);
  }
}

/** Page at region-relative index `i` (wrapping). */
export function pageAt(region: Region, i: number): number {
  return region.start + (((Math.floor(i) % region.pages) + region.pages) % region.pages);
}

/** Kernel text, data and slab: 32 MiB, or an eighth of a smaller guest. */
export function kernelPages(pageCount: number, pageSize: number): number {
  return Math.max(1, Math.min(Math.ceil((32 * 1024 * 1024) / pageSize), Math.floor(pageCount / 8)));
}

/**
 * The layout of an OS running one application: a kernel region first, the
 * application's regions, and filler (other processes, page cache) so that
 * about `nonZeroFraction` of the guest starts non-zero.
 */
export function guestLayout(pageCount: number, pageSize: number, seed: number, app: readonly RegionRequest[], nonZeroFraction: number): Layout {
  const requests = [{ name: 'kernel', pages: kernelPages(pageCount, pageSize) }, ...app];
  const used = requests.reduce((a, r) => a + Math.max(1, Math.floor(r.pages)), 0);
  return placeRegions(pageCount, seed, requests, Math.round(nonZeroFraction * pageCount) - used, true);
}
