import type { PageRecord } from '../wire/frames.ts';
import { encodePage, pagesFrame } from '../wire/pages.ts';
import { encodeRawPagesFrame, hasFastPagesFrame, type EncodedPagesFrame } from '../wire/pages-frame.ts';
import type { Lane, SourceLink } from './source-link.ts';
import type { Sent, SourceState } from './source-state.ts';

/** Pages per stripe: a stripe of consecutive pages always travels on the same lane. */
const STRIPE_SHIFT = 6;

export interface PageSenderOptions {
  readonly codec: 'none' | 'deflate' | 'lz4';
  readonly pagesPerFrame: number;
}

/**
 * Puts pages on the wire: stripes them over the connections (a page always
 * on the same one, so its versions arrive in order), reads them from the
 * image in runs, encodes PAGES frames (straight from the mapped image when
 * uncompressed) and records what the target will hold.
 */
export class PageSender {
  private readonly batchBuf: Buffer;
  private readonly srcPos: Uint32Array;
  private readonly rawFrames: boolean;

  constructor(
    private readonly s: SourceState,
    private readonly link: SourceLink,
    private readonly o: PageSenderOptions,
  ) {
    this.batchBuf = Buffer.allocUnsafe(s.pageSize * o.pagesPerFrame);
    this.srcPos = new Uint32Array(o.pagesPerFrame);
    this.rawFrames = o.codec === 'none' && hasFastPagesFrame;
  }

  /** Sends the stale pages of a prefix of `list` within `budget` bytes; returns bytes and pages sent. */
  async send(list: ArrayLike<number>, budget: number): Promise<Sent> {
    const { s, link } = this;
    const lanes = link.lanes;
    const approx = s.pageSize + 24;
    const batches: number[][] = lanes.map(() => []);
    let bytes = 0;
    let pages = 0;
    let pending = 0;
    const flush = async (laneNo: number): Promise<void> => {
      const idx = batches[laneNo];
      if (idx.length === 0) return;
      pending -= idx.length;
      bytes += await this.sendBatch(lanes[laneNo], idx);
      idx.length = 0;
    };
    let i = 0;
    for (; i < list.length; i++) {
      const p = list[i];
      if (!s.stale.has(p)) continue;
      if (bytes + (pending + 1) * approx > budget) break;
      const laneNo = lanes.length === 1 ? 0 : (p >>> STRIPE_SHIFT) % lanes.length;
      batches[laneNo].push(p);
      pending++;
      s.markSent(p);
      pages++;
      if (batches[laneNo].length >= this.o.pagesPerFrame) {
        await flush(laneNo);
        // Let acknowledgements in: an await that never blocks never reaches the I/O phase.
        if (link.seq % 16 === 0) await new Promise<void>((r) => setImmediate(r));
      }
      if (link.linkError) throw link.linkError;
    }
    for (let k = 0; k < lanes.length; k++) await flush(k);
    s.ledger.onSend(bytes, pages, i);
    return { bytes, pages };
  }

  /** Encodes and sends one PAGES frame of `idx` on `lane`; returns its size. */
  private async sendBatch(lane: Lane, idx: readonly number[]): Promise<number> {
    const { s, link } = this;
    const seq = ++link.seq;
    let frameBytes: number;
    if (this.rawFrames) {
      // The whole frame in one buffer; pages copied straight from the mapped
      // image into it and hashed from that copy (one pass over the data).
      const enc = this.encodeRaw(seq, idx);
      for (let q = 0; q < idx.length; q++) s.sentDigests[idx[q]] = enc.digests[q];
      frameBytes = await lane.ch.sendEncoded(enc.frame);
    } else {
      this.readBatch(idx);
      const batch: PageRecord[] = [];
      for (let q = 0; q < idx.length; q++) {
        const rec = encodePage(idx[q], this.batchBuf.subarray(q * s.pageSize, (q + 1) * s.pageSize), { pageSize: s.pageSize, codec: this.o.codec });
        batch.push(rec);
        s.sentDigests[idx[q]] = rec.digest;
      }
      frameBytes = await lane.ch.send(pagesFrame(seq, batch));
    }
    link.onSent(lane, seq, frameBytes);
    s.acct.onBytes(frameBytes);
    return frameBytes;
  }

  private encodeRaw(seq: number, idx: readonly number[]): EncodedPagesFrame {
    const { s } = this;
    let lo = idx[0];
    let hi = idx[0];
    for (const p of idx) {
      if (p < lo) lo = p;
      if (p > hi) hi = p;
    }
    const view = s.reader.view(lo, hi - lo + 1);
    if (view) {
      for (let q = 0; q < idx.length; q++) this.srcPos[q] = idx[q] - lo;
      return encodeRawPagesFrame(seq, idx, view, s.pageSize, { srcPos: this.srcPos.subarray(0, idx.length) });
    }
    this.readBatch(idx);
    return encodeRawPagesFrame(seq, idx, this.batchBuf, s.pageSize);
  }

  /** Reads the pages of a batch into batchBuf in runs of consecutive indices: one copy (or pread) per run. */
  private readBatch(idx: readonly number[]): void {
    let k = 0;
    while (k < idx.length) {
      let e = k + 1;
      while (e < idx.length && idx[e] === idx[e - 1] + 1) e++;
      this.s.reader.readPages(idx[k], e - k, this.batchBuf.subarray(k * this.s.pageSize));
      k = e;
    }
  }
}
