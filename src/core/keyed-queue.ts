/**
 * Pages with a small integer key each (a class: 0 goes first), read in key
 * order: the send order of a policy that ranks pages by class, kept across
 * epochs so that an epoch costs the pages that changed and the prefix read,
 * not the guest.
 *
 * One FIFO per key, with lazy deletion: removing a page or changing its key
 * only updates the page's key and version; entries that no longer match are
 * skipped when read and dropped when they reach the front of their FIFO, or
 * when they outnumber the live ones (amortized O(1) per change). Within a key,
 * pages come in the order they got it; pages filed in ascending order (as a
 * first sight of the guest does) come out ascending.
 */
const NONE = -1;
const MIN_CAPACITY = 16;

class Fifo {
  pages = new Uint32Array(MIN_CAPACITY);
  vers = new Uint32Array(MIN_CAPACITY);
  head = 0;
  tail = 0;
  live = 0;

  push(page: number, ver: number): void {
    if (this.tail === this.pages.length) this.grow();
    this.pages[this.tail] = page;
    this.vers[this.tail] = ver;
    this.tail++;
  }

  private grow(): void {
    const used = this.tail - this.head;
    const cap = Math.max(MIN_CAPACITY, used * 2);
    const pages = new Uint32Array(cap);
    const vers = new Uint32Array(cap);
    pages.set(this.pages.subarray(this.head, this.tail));
    vers.set(this.vers.subarray(this.head, this.tail));
    this.pages = pages;
    this.vers = vers;
    this.head = 0;
    this.tail = used;
  }
}

export class KeyedQueue {
  private readonly keyOf: Int32Array;
  private readonly verOf: Uint32Array;
  private readonly fifos: Fifo[];
  private members = 0;

  constructor(readonly pageCount: number, readonly keys: number) {
    if (!(Number.isInteger(keys) && keys >= 1)) throw new RangeError(`a queue needs at least one key, got ${keys}`);
    this.keyOf = new Int32Array(pageCount).fill(NONE);
    this.verOf = new Uint32Array(pageCount);
    this.fifos = Array.from({ length: keys }, () => new Fifo());
  }

  get size(): number {
    return this.members;
  }

  has(page: number): boolean {
    return this.keyOf[page] !== NONE;
  }

  /** The page's key, or -1 when it is not queued. */
  key(page: number): number {
    return this.keyOf[page];
  }

  set(page: number, key: number): void {
    if (!((key >>> 0) === key && key < this.keys)) throw new RangeError(`queue key ${key} out of range [0, ${this.keys})`);
    const old = this.keyOf[page];
    if (old === key) return;
    if (old === NONE) this.members++;
    else this.fifos[old].live--;
    this.keyOf[page] = key;
    const ver = (this.verOf[page] + 1) >>> 0;
    this.verOf[page] = ver;
    const f = this.fifos[key];
    f.live++;
    f.push(page, ver);
    if (f.tail - f.head > 2 * f.live + MIN_CAPACITY) this.compact(f, key);
  }

  remove(page: number): void {
    const old = this.keyOf[page];
    if (old === NONE) return;
    this.keyOf[page] = NONE;
    this.fifos[old].live--;
    this.members--;
  }

  /**
   * Up to `limit` members, lowest key first (within a key, first filed
   * first), left in the queue. Costs the entries read, dead ones included.
   */
  take(limit: number): Uint32Array {
    const n = Math.min(this.members, Math.max(0, Math.floor(Math.min(limit, this.members))));
    const out = new Uint32Array(n);
    let k = 0;
    for (let key = 0; key < this.keys && k < n; key++) {
      const f = this.fifos[key];
      if (f.live === 0) {
        f.head = f.tail = 0;
        continue;
      }
      let front = true;
      for (let i = f.head; i < f.tail && k < n; i++) {
        const p = f.pages[i];
        if (this.keyOf[p] === key && this.verOf[p] === f.vers[i]) {
          out[k++] = p;
          front = false;
        } else if (front) f.head = i + 1;
      }
    }
    return out;
  }

  private compact(f: Fifo, key: number): void {
    let n = f.head;
    for (let i = f.head; i < f.tail; i++) {
      const p = f.pages[i];
      if (this.keyOf[p] === key && this.verOf[p] === f.vers[i]) {
        f.pages[n] = p;
        f.vers[n] = f.vers[i];
        n++;
      }
    }
    f.tail = n;
  }
}
