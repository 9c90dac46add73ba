/**
 * A fixed-size set of page indices backed by a bitmap (one bit per page).
 *
 * Policies do set algebra over every page of the guest each epoch, so the
 * operations work a 32-bit word at a time; a 1 M-page guest is a 128 KiB bitmap
 * and a union is 32 768 word operations.
 */
export interface ReadonlyPageSet {
  readonly size: number;
  has(page: number): boolean;
  count(): number;
  isEmpty(): boolean;
  forEach(fn: (page: number) => void): void;
  [Symbol.iterator](): Iterator<number>;
  toArray(): Uint32Array;
  head(limit: number): Uint32Array;
  words(): Readonly<Uint32Array>;
}

export class PageSet implements ReadonlyPageSet {
  readonly size: number;
  private readonly bits: Uint32Array;

  constructor(size: number, bits?: Uint32Array) {
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`page set size must be a non-negative integer, got ${size}`);
    this.size = size;
    const n = (size + 31) >>> 5;
    if (bits) {
      if (bits.length !== n) throw new RangeError(`bitmap has ${bits.length} words, ${n} expected for ${size} pages`);
      this.bits = bits;
    } else {
      this.bits = new Uint32Array(n);
    }
  }

  static full(size: number): PageSet {
    const s = new PageSet(size);
    s.bits.fill(0xffffffff);
    s.maskTail();
    return s;
  }

  static copyOf(other: ReadonlyPageSet): PageSet {
    return new PageSet(other.size, other.words().slice());
  }

  static of(size: number, pages: Iterable<number>): PageSet {
    const s = new PageSet(size);
    for (const p of pages) s.add(p);
    return s;
  }

  private check(page: number): void {
    if (!(page >= 0 && page < this.size && Number.isInteger(page))) {
      throw new RangeError(`page ${page} out of range [0, ${this.size})`);
    }
  }

  private checkSame(other: ReadonlyPageSet): void {
    if (other.size !== this.size) throw new RangeError(`page sets differ in size: ${this.size} vs ${other.size}`);
  }

  private maskTail(): void {
    const rem = this.size & 31;
    if (rem !== 0) this.bits[this.bits.length - 1] &= (2 ** rem - 1) >>> 0;
  }

  has(page: number): boolean {
    if (page < 0 || page >= this.size) return false;
    return (this.bits[page >>> 5] & (1 << (page & 31))) !== 0;
  }

  add(page: number): this {
    this.check(page);
    this.bits[page >>> 5] |= 1 << (page & 31);
    return this;
  }

  /** Adds pages first..last inclusive. */
  addRange(first: number, last: number): this {
    this.check(first);
    this.check(last);
    if (last < first) throw new RangeError(`range ${first}-${last} is reversed`);
    for (let p = first; p <= last; ) {
      if ((p & 31) === 0 && p + 31 <= last) {
        this.bits[p >>> 5] = 0xffffffff;
        p += 32;
      } else {
        this.bits[p >>> 5] |= 1 << (p & 31);
        p++;
      }
    }
    return this;
  }

  delete(page: number): this {
    if (page >= 0 && page < this.size) this.bits[page >>> 5] &= ~(1 << (page & 31));
    return this;
  }

  clear(): this {
    this.bits.fill(0);
    return this;
  }

  isEmpty(): boolean {
    for (let i = 0; i < this.bits.length; i++) if (this.bits[i] !== 0) return false;
    return true;
  }

  count(): number {
    let c = 0;
    const b = this.bits;
    for (let i = 0; i < b.length; i++) c += popcount32(b[i]);
    return c;
  }

  clone(): PageSet {
    return new PageSet(this.size, this.bits.slice());
  }

  words(): Readonly<Uint32Array> {
    return this.bits;
  }

  /** In place: this ∪ other. */
  unionWith(other: ReadonlyPageSet): this {
    this.checkSame(other);
    const o = other.words();
    for (let i = 0; i < this.bits.length; i++) this.bits[i] |= o[i];
    return this;
  }

  /** In place: this \ other. */
  subtract(other: ReadonlyPageSet): this {
    this.checkSame(other);
    const o = other.words();
    for (let i = 0; i < this.bits.length; i++) this.bits[i] &= ~o[i];
    return this;
  }

  /** In place: this ∩ other. */
  intersectWith(other: ReadonlyPageSet): this {
    this.checkSame(other);
    const o = other.words();
    for (let i = 0; i < this.bits.length; i++) this.bits[i] &= o[i];
    return this;
  }

  union(other: ReadonlyPageSet): PageSet {
    return this.clone().unionWith(other);
  }

  difference(other: ReadonlyPageSet): PageSet {
    return this.clone().subtract(other);
  }

  intersection(other: ReadonlyPageSet): PageSet {
    return this.clone().intersectWith(other);
  }

  equals(other: ReadonlyPageSet): boolean {
    if (other.size !== this.size) return false;
    const o = other.words();
    for (let i = 0; i < this.bits.length; i++) if (this.bits[i] !== o[i]) return false;
    return true;
  }

  /** Calls fn for every member in ascending order; skips empty words. */
  forEach(fn: (page: number) => void): void {
    const b = this.bits;
    for (let i = 0; i < b.length; i++) {
      let w = b[i];
      while (w !== 0) {
        const t = w & -w;
        fn((i << 5) + (31 - Math.clz32(t)));
        w ^= t;
      }
    }
  }

  *[Symbol.iterator](): Iterator<number> {
    const b = this.bits;
    for (let i = 0; i < b.length; i++) {
      let w = b[i];
      while (w !== 0) {
        const t = w & -w;
        yield (i << 5) + (31 - Math.clz32(t));
        w ^= t;
      }
    }
  }

  toArray(): Uint32Array {
    const out = new Uint32Array(this.count());
    let k = 0;
    this.forEach((p) => {
      out[k++] = p;
    });
    return out;
  }

  /**
   * The `limit` lowest members in ascending order (all of them if fewer):
   * costs the words up to the last one taken, not the whole bitmap, so a
   * policy that needs only what fits an epoch does not pay for the guest's size.
   */
  head(limit: number): Uint32Array {
    const n = Math.max(0, Math.floor(limit));
    const out: number[] = [];
    const b = this.bits;
    for (let i = 0; i < b.length && out.length < n; i++) {
      let w = b[i];
      while (w !== 0 && out.length < n) {
        const t = w & -w;
        out.push((i << 5) + (31 - Math.clz32(t)));
        w ^= t;
      }
    }
    return Uint32Array.from(out);
  }

  /** Ranges of consecutive members, as used by the trace format. */
  ranges(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let start = -1;
    let prev = -2;
    this.forEach((p) => {
      if (p !== prev + 1) {
        if (start >= 0) out.push([start, prev]);
        start = p;
      }
      prev = p;
    });
    if (start >= 0) out.push([start, prev]);
    return out;
  }
}

export function popcount32(x: number): number {
  x = x - ((x >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/** Calls fn for every member of `set` in [from, to), ascending; skips empty words. */
export function forEachInRange(set: ReadonlyPageSet, from: number, to: number, fn: (page: number) => void): void {
  const b = set.words();
  const lo = Math.max(0, from);
  const hi = Math.min(set.size, to);
  if (hi <= lo) return;
  for (let i = lo >>> 5; i <= (hi - 1) >>> 5; i++) {
    let w = b[i];
    while (w !== 0) {
      const t = w & -w;
      const p = (i << 5) + (31 - Math.clz32(t));
      w ^= t;
      if (p >= lo && p < hi) fn(p);
    }
  }
}

/**
 * A private copy of a set that changes between looks (a shell's stale set):
 * each sync reports what was added and removed since the last one. It
 * compares words, so it costs a pass over the bitmap (32 pages a step) plus
 * the changes, not a callback per member.
 */
export class PageSetMirror {
  private readonly bits: Uint32Array;

  constructor(readonly size: number) {
    this.bits = new Uint32Array((size + 31) >>> 5);
  }

  sync(current: ReadonlyPageSet, onAdd: (page: number) => void, onRemove: (page: number) => void): void {
    if (current.size !== this.size) throw new RangeError(`page sets differ in size: ${this.size} vs ${current.size}`);
    const o = current.words();
    const b = this.bits;
    for (let i = 0; i < b.length; i++) {
      const now = o[i];
      const was = b[i];
      if (now === was) continue;
      b[i] = now;
      let added = (now & ~was) >>> 0;
      let removed = (was & ~now) >>> 0;
      while (removed !== 0) {
        const t = removed & -removed;
        onRemove((i << 5) + (31 - Math.clz32(t)));
        removed ^= t;
      }
      while (added !== 0) {
        const t = added & -added;
        onAdd((i << 5) + (31 - Math.clz32(t)));
        added ^= t;
      }
    }
  }
}
