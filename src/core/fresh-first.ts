import { PageSet, type ReadonlyPageSet } from './pageset.ts';
import type { EpochDecision, EpochObservation } from './types.ts';

/**
 * Fresh-first switchover, for a hot set that a live round cannot catch up
 * with (a frame buffer redrawn at a frame rate).
 *
 * A page that is rewritten periodically is safest right after it was
 * written: its next write is a whole period away. So at launch, instead of
 * pausing with the whole hot set stale, watch the hot set closely (only those
 * pages are looked at, every `probeMs`), wait for a burst of writes to end,
 * send the pages just written while the guest still runs, and pause once they
 * are (nearly) on the other side. The pause then carries only the part of the
 * hot set that was not rewritten in the watch: with double buffering, one
 * buffer instead of two.
 *
 * It is a bet on periodic writes. If the hot set is written continuously the
 * burst never ends; if it is not written at all there is no burst: either
 * way the watch ends after `maxWaitMs` and the guest pauses as it would have.
 * A page of the burst that is written again before the pause is caught by
 * the final scan, so a lost bet costs launch→running time, never data.
 */
export interface FreshFirstConfig {
  /** Time between two looks at the hot set, ms. */
  readonly probeMs: number;
  /** Give up watching after this long, ms (about one frame interval and a burst). */
  readonly maxWaitMs: number;
  /** A look that finds at least this share of the hot set newly written belongs to a burst. */
  readonly burstShare: number;
  /**
   * ...and it ends once looks have found fewer than `quietShare` of it newly
   * written for `quietMs` (background writes to the hot set go on meanwhile).
   */
  readonly quietShare: number;
  readonly quietMs: number;
  /** Only worth it when the burst takes at least this long to send, ms. */
  readonly minGainMs: number;
  /** Not worth it when the burst would take longer than this to send, ms: it would be rewritten meanwhile. */
  readonly maxSendMs: number;
  /**
   * While watching, keep this many looks' worth of link time busy with hot
   * pages not yet rewritten (0: leave the link idle). The next burst will
   * rewrite some of them; those it spares are in sync at the pause if it
   * comes before their next write. Kept short so that the burst's own pages
   * never queue behind much.
   */
  readonly meanwhileLooks: number;
}

export const DEFAULT_FRESH_FIRST: FreshFirstConfig = {
  probeMs: 2,
  maxWaitMs: 60,
  burstShare: 0.05,
  quietShare: 0.03,
  // Two probe intervals: a writer descheduled for one is not done.
  quietMs: 4,
  minGainMs: 5,
  maxSendMs: 60,
  meanwhileLooks: 2,
};

type State = 'watching' | 'burst' | 'done';

export class FreshFirst {
  private state: State = 'watching';
  /** When a look last found the burst still writing. */
  private busyAtMs = 0;
  private readonly hot: PageSet;
  private readonly fresh: PageSet;
  private readonly startedMs: number;
  private readonly hotList: Uint32Array;
  /** The hot pages in the order they are sent while watching, and how far that got. */
  private readonly spread: Uint32Array;
  private cursor = 0;

  /** `hot`: the stale pages at launch; `nowMs`: the observation time the watch starts at. */
  constructor(hot: ReadonlyPageSet, nowMs: number, private readonly cfg: FreshFirstConfig = DEFAULT_FRESH_FIRST) {
    this.hot = PageSet.copyOf(hot);
    this.hotList = this.hot.toArray();
    this.fresh = new PageSet(this.hot.size);
    this.startedMs = nowMs;
    this.spread = spreadOrder(this.hotList);
  }

  /** Whether a hot set of this size is worth watching on this link at all. */
  static worthWatching(hotPages: number, wireBytesPerPage: number, bandwidthBytesPerSec: number, cfg: FreshFirstConfig = DEFAULT_FRESH_FIRST): boolean {
    if (!(bandwidthBytesPerSec > 0) || hotPages === 0) return false;
    // Even the whole hot set sent live would not shorten the pause by enough.
    return ((hotPages * wireBytesPerPage) / bandwidthBytesPerSec) * 1000 >= cfg.minGainMs;
  }

  /** The first decision: look at the hot set again in `probeMs` (or, with maxWaitMs 0, pause at once). */
  start(obs: EpochObservation): EpochDecision {
    if (this.cfg.maxWaitMs <= 0) return this.giveUp(obs, 0);
    return this.look({ state: 0 }, this.meanwhile(obs));
  }

  /**
   * Hot pages not rewritten since the watch began, spread over the whole hot
   * set (the next burst may hit any part of it), enough to keep the link
   * busy for `meanwhileLooks` looks counting what is still in flight.
   */
  private meanwhile(obs: EpochObservation): { send: Uint32Array; budgetBytes: number } {
    const bw = obs.net.bandwidthBytesPerSec;
    const budgetBytes = Math.max(0, (bw * this.cfg.meanwhileLooks * this.cfg.probeMs) / 1000 - obs.net.bytesInFlight);
    const want = Math.floor(budgetBytes / Math.max(1, obs.wireBytesPerPage));
    const out: number[] = [];
    while (out.length < want && this.cursor < this.spread.length) {
      const p = this.spread[this.cursor++];
      if (!this.fresh.has(p) && obs.stale.has(p)) out.push(p);
    }
    return { send: Uint32Array.from(out), budgetBytes };
  }

  /**
   * `obs.dirty` holds the hot pages written since the last look (the shell
   * looked at nothing else). Returns another look, or the switchover, with
   * the fresh pages to send before the pause when the bet is on.
   */
  decide(obs: EpochObservation): EpochDecision {
    if (this.state === 'done') return pauseNow(new Uint32Array(0), { freshState: 3 });
    let newly = 0;
    obs.dirty.forEach((p) => {
      if (this.hot.has(p) && !this.fresh.has(p)) {
        this.fresh.add(p);
        newly++;
      }
    });
    const n = this.hot.count();
    const waited = obs.timeMs - this.startedMs;
    if (this.state === 'watching') {
      if (newly >= Math.max(1, this.cfg.burstShare * n)) {
        this.state = 'burst';
        this.busyAtMs = obs.timeMs;
      }
      else if (waited >= this.cfg.maxWaitMs) return this.giveUp(obs, waited);
      else return this.look({ state: 0, waitedMs: waited }, this.meanwhile(obs));
    }
    // In a burst: wait for it to end, but not forever (a continuous writer
    // never pauses). What it wrote so far goes out at once: a frame writes
    // each page once, and a page caught half written is found by the final
    // scan and sent again.
    if (newly >= Math.max(1, this.cfg.quietShare * n)) this.busyAtMs = obs.timeMs;
    const quiet = obs.timeMs - this.busyAtMs >= this.cfg.quietMs;
    const bw = obs.net.bandwidthBytesPerSec;
    const burstMs = bw > 0 ? ((this.fresh.count() * obs.wireBytesPerPage) / bw) * 1000 : Infinity;
    // A burst this big is rewritten before it could all cross: the bet is off.
    if (burstMs > this.cfg.maxSendMs) return this.giveUp(obs, waited);
    const rest = this.fresh.intersection(obs.stale).toArray();
    if (!quiet && waited < this.cfg.maxWaitMs) {
      // A shell whose pause takes effect late (QEMU) is asked to start it at
      // the burst's first sight: the burst is written and sent during the lag
      // instead of before it.
      const d = this.look({ state: 1, waitedMs: waited, freshPages: this.fresh.count() }, { send: rest, budgetBytes: Infinity });
      return (obs.pauseLagMs ?? 0) > 0 && burstMs >= this.cfg.minGainMs ? { ...d, startPause: true } : d;
    }
    if (!quiet) return this.giveUp(obs, waited);
    if (burstMs < this.cfg.minGainMs && waited < this.cfg.maxWaitMs) {
      // Too few pages to be the burst that was waited for (a stray write): keep watching.
      this.state = 'watching';
      return this.look({ state: 0, waitedMs: waited, freshPages: this.fresh.count() }, this.meanwhile(obs));
    }
    if (burstMs < this.cfg.minGainMs) return this.giveUp(obs, waited);
    this.state = 'done';
    return { send: rest, budgetBytes: Infinity, switchover: true, converged: true, diag: { freshState: 2, waitedMs: waited, freshPages: this.fresh.count(), freshSendMs: burstMs } };
  }

  /**
   * The bet is off: pause now. What the guest's pause lag lets cross for
   * free still goes ahead of it: the pages written during the watch first
   * (the freshest), then the rest of the hot set in spread order.
   */
  private giveUp(obs: EpochObservation, waited: number): EpochDecision {
    this.state = 'done';
    const lag = Math.max(0, obs.pauseLagMs ?? 0);
    // A little under the lag: the shell starts the pause alongside only sends that fit it.
    const want = Math.floor((obs.net.bandwidthBytesPerSec * lag * 0.9) / 1000 / Math.max(1, obs.wireBytesPerPage));
    const out: number[] = [];
    if (want > 0) {
      for (const p of this.fresh) {
        if (out.length >= want) break;
        if (obs.stale.has(p)) out.push(p);
      }
      for (let i = 0; i < this.spread.length && out.length < want; i++) {
        const p = this.spread[i];
        if (!this.fresh.has(p) && obs.stale.has(p)) out.push(p);
      }
    }
    return pauseNow(Uint32Array.from(out), { freshState: 4, waitedMs: waited, freshPages: this.fresh.count() });
  }

  private look(diag: { state: number; waitedMs?: number; freshPages?: number }, sends: { send: Uint32Array; budgetBytes: number } = { send: new Uint32Array(0), budgetBytes: 0 }): EpochDecision {
    const { state, ...rest } = diag;
    return { ...sends, switchover: false, probe: { pages: this.hotList, afterMs: this.cfg.probeMs }, diag: { freshState: state, ...rest } };
  }
}

/**
 * `pages` reordered so that any prefix samples the whole list evenly: index
 * i goes to the slot of the fractional part of i·φ (a golden-ratio low
 * discrepancy sequence), deterministic and without randomness.
 */
export function spreadOrder(pages: Uint32Array): Uint32Array {
  const n = pages.length;
  const keys = new Float64Array(n);
  const idx = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    keys[i] = (i * 0.6180339887498949) % 1;
    idx[i] = i;
  }
  idx.sort((a, b) => keys[a] - keys[b]);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = pages[idx[i]];
  return out;
}

function pauseNow(send: Uint32Array, diag: Record<string, number>): EpochDecision {
  return { send, budgetBytes: send.length > 0 ? Infinity : 0, switchover: true, converged: true, diag };
}
