import { randomBytes, createHash } from 'node:crypto';
import { realpathSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { channel } from 'node:diagnostics_channel';
import { Accounting, type MigrationMetrics } from '../core/accounting.ts';
import { ErrorCodes, PeerReportedError, PresyncError, toPresyncError } from '../core/errors.ts';
import { ShellLedger } from '../core/ledger.ts';
import { NetEstimator, type SendStamp } from '../core/net-estimator.ts';
import { PageSet } from '../core/pageset.ts';
import { PhaseMachine, guestPausedIn, type Phase } from '../core/phase.ts';
import type { EpochDecision, EpochObservation, MigrationPolicy } from '../core/types.ts';
import type { GuestController } from '../guest/controller.ts';
import { DirtyScanner } from '../guest/dirty-scanner.ts';
import { RamImageReader } from '../guest/ram-image.ts';
import type { Transport, TransportAddress } from '../transport/types.ts';
import { DigestRunCollector, digestRunFrames, verifySummary } from '../wire/digest-runs.ts';
import { initDigest, zeroPageDigest } from '../native/page-digest.ts';
import type { Frame, PageRecord, VerifyResponseFrame, VerifySummaryResponseFrame } from '../wire/frames.ts';

type VerifyReply = VerifyResponseFrame | VerifySummaryResponseFrame;

/**
 * Known-stale pages at the pause from which the final scan overlaps their
 * sending: 256 pages (1 MiB) take ~8 ms at 1 Gbit/s, about what the worker
 * thread's scan loses to the blocking two-thread scan on 256 MiB.
 */
const OVERLAP_FINAL_SCAN_MIN_PAGES = 256;
import { Capability } from '../wire/constants.ts';
import { ClientHandshake, checkLineageId, checkSecretStrength } from '../wire/handshake.ts';
import { localCodecCapabilities } from '../wire/page-codecs.ts';
import { encodePage, pagesFrame } from '../wire/pages.ts';
import { encodeRawPagesFrame, hasFastPagesFrame } from '../wire/pages-frame.ts';
import { FrameChannel } from './frame-channel.ts';
import { sleep } from '../transport/deadline.ts';

export interface MigrateOptions {
  readonly transport: Transport;
  readonly to: TransportAddress;
  readonly secret: Uint8Array;
  readonly imagePath: string;
  readonly pageSize?: number;
  /** Identity the target files the image under; default derived from the image's real path and size. */
  readonly imageId?: string;
  /**
   * This migration's lineage (32 lowercase hex digits, 16 random bytes),
   * owned by the source: the target resumes only an image of the same
   * lineage. Default: a fresh one per SourceMigration.
   */
  readonly lineageId?: string;
  readonly policy: MigrationPolicy;
  readonly controller: GuestController;
  /** Epoch length during presync, ms. Default 100. */
  readonly epochMs?: number;
  /** A known rate cap (the shaper's), bytes/s: the estimator never assumes more. */
  readonly bandwidthBytesPerSec?: number;
  readonly codec?: 'none' | 'deflate' | 'lz4';
  /**
   * Dirty scans during presync. full: every page every epoch. incremental:
   * pages written in the last epochs plus a rotating eighth of the image, so
   * a change to a cold page shows within 8 epochs. auto (default):
   * incremental until every page has been sent once (the initial sync, when
   * most pages are going to be sent anyway), full afterwards; a sparse image
   * whose zero pages never need sending (QEMU RAM the guest has not touched)
   * stays incremental. After launch scans are full, except the first one
   * (incremental unless `full`), and the final one always is.
   */
  readonly scan?: 'full' | 'incremental' | 'auto';
  /**
   * Run each presync epoch's dirty scan during the previous epoch's sends
   * (hashing on a worker thread), instead of before them. Default true.
   */
  readonly overlapScans?: boolean;
  /**
   * TCP connections to sync over (default 1). Extra ones join the session
   * (authenticated like the first) and carry pages only; a page always goes
   * over the same one, so its versions arrive in order. A target that does
   * not offer multi-stream gets one.
   */
  readonly streams?: number;
  /** Pages per PAGES frame. Default 64. */
  readonly pagesPerFrame?: number;
  /** Reconnect attempts after a connection breaks during presync. Default 8 (backoff 100 ms … 5 s). */
  readonly reconnectAttempts?: number;
  /** Give up waiting for the target at a step after launch, ms. Default 30 000. */
  readonly stepTimeoutMs?: number;
  /** Device state moved at switchover (opaque); default none. */
  readonly deviceState?: () => Promise<Uint8Array>;
  readonly onEvent?: (e: SourceEvent) => void;
}

export type SourceEvent =
  | {
      event: 'connected';
      resume: boolean;
      stalePages: number;
      attempt: number;
      /** Pages whose current content the target already holds. */
      heldPages: number;
      /** Distinct pages sent over earlier connections. */
      sentBeforePages: number;
    }
  | { event: 'disconnected'; error: { code: string; message: string } }
  | { event: 'progress'; status: SourceStatus }
  | { event: 'phase'; phase: Phase; atMs: number }
  /** The guest stopped on the source (the controller's pause returned), ms since the migration started. */
  | { event: 'paused'; atMs: number };

export interface SourceStatus {
  readonly phase: Phase;
  readonly elapsedMs: number;
  readonly pageCount: number;
  /** Pages whose current content the target holds or has on its way: only grows as a share while the guest is quiet. */
  readonly inSyncPages: number;
  readonly inSyncPercent: number;
  readonly stalePages: number;
  readonly rateBytesPerSec: number;
  /** The estimator's view of the available bandwidth, bytes/s. */
  readonly bandwidthBytesPerSec: number;
  readonly presyncBytes: number;
  readonly finalBytes: number;
  /** Expected pause if launched now (core/downtime.ts): stale pages × recent wire bytes per page ÷ bandwidth + one RTT. */
  readonly expectedDowntimeMs: number;
  readonly epoch: number;
  readonly pageSize: number;
  /** Pages the last presync scan found written. */
  readonly dirtyPages: number;
  /** Every page that differed from the target at the start has been sent once. */
  readonly initialCopyDone: boolean;
}

export interface MigrationResult extends MigrationMetrics {
  readonly series: Accounting['series'];
}

const events = channel('presync:source:event');

export function defaultImageId(path: string): string {
  const real = realpathSync(path);
  const size = statSync(real).size;
  const h = createHash('sha256').update(`${real}\0${size}`).digest('hex').slice(0, 16);
  return `${basename(real)}-${h}`;
}

interface InFlight {
  readonly bytes: number;
  readonly stamp: SendStamp;
}

/** One connection pages travel on; lane 0 is the control connection. */
interface Lane {
  readonly ch: FrameChannel;
  /** Batches sent on this connection and not yet acknowledged (acks are cumulative per connection). */
  readonly inflight: Map<number, InFlight>;
}

/** Pages per stripe: a stripe of consecutive pages always travels on the same lane. */
const STRIPE_SHIFT = 6;

/**
 * The source side of one migration: presync epochs until launch, live rounds,
 * pause, final copy, verify, handover. It never writes the source image, and
 * on any failure before the handover is confirmed it resumes the guest.
 */
export class SourceMigration {
  private readonly o: MigrateOptions;
  private readonly phases = new PhaseMachine();
  private readonly start = performance.now();
  private launchRequestedAt = -1;
  private launchWaiter: (() => void) | undefined;
  private status: SourceStatus;
  private stopRequested = false;
  /** Why abort() was called; the migration ends with it, whatever else failed meanwhile. */
  private abortError: PresyncError | undefined;
  /** Set while run() runs: breaks every wait so the rollback starts at once. */
  private onAbort: ((e: PresyncError) => void) | undefined;
  private est: NetEstimator | undefined;
  private bandwidthCap: number | undefined;
  private downtimeLimitMs: number | undefined;

  /** The lineage this migration's HELLOs carry. */
  readonly lineageId: string;

  constructor(o: MigrateOptions) {
    this.o = o;
    if (o.lineageId !== undefined) checkLineageId(o.lineageId);
    checkSecretStrength(o.secret);
    this.lineageId = o.lineageId ?? randomBytes(16).toString('hex');
    this.status = {
      phase: 'idle',
      elapsedMs: 0,
      pageCount: 0,
      inSyncPages: 0,
      inSyncPercent: 0,
      stalePages: 0,
      rateBytesPerSec: 0,
      bandwidthBytesPerSec: 0,
      presyncBytes: 0,
      finalBytes: 0,
      expectedDowntimeMs: 0,
      epoch: 0,
      pageSize: o.pageSize ?? 4096,
      dirtyPages: 0,
      initialCopyDone: false,
    };
  }

  /** An operator's bandwidth limit from now on (null: none): the estimator never assumes more. */
  setBandwidthCap(bytesPerSec: number | null): void {
    this.bandwidthCap = bytesPerSec ?? Number.POSITIVE_INFINITY;
    this.est?.setCap(this.bandwidthCap);
  }

  /** An operator's downtime limit from now on: the live rounds after launch pause once the rest fits it. */
  setDowntimeLimit(ms: number): void {
    this.downtimeLimitMs = ms;
  }

  private now(): number {
    return performance.now() - this.start;
  }

  /** Say "go". Idempotent; ignored once past presync. */
  launch(): void {
    if (this.launchRequestedAt < 0) this.launchRequestedAt = this.now();
    this.launchWaiter?.();
  }

  get launched(): boolean {
    return this.launchRequestedAt >= 0;
  }

  currentStatus(): SourceStatus {
    return { ...this.status, elapsedMs: this.now() };
  }

  private emit(e: SourceEvent): void {
    if (events.hasSubscribers) events.publish(e);
    this.o.onEvent?.(e);
  }

  private toPhase(p: Phase, reason?: string): void {
    const at = this.now();
    this.phases.to(p, at, reason);
    this.status = { ...this.status, phase: p };
    this.emit({ event: 'phase', phase: p, atMs: at });
  }

  async run(): Promise<MigrationResult> {
    await initDigest();
    const o = this.o;
    const pageSize = o.pageSize ?? 4096;
    const reader = RamImageReader.open(o.imagePath, pageSize);
    const geometry = reader.geometry;
    const { pageCount } = geometry;
    const imageId = o.imageId ?? defaultImageId(o.imagePath);
    const scanner = new DirtyScanner(reader);
    const acct = new Accounting(pageCount);
    const ledger = new ShellLedger(pageSize);
    const est = new NetEstimator({
      initialBandwidthBytesPerSec: o.bandwidthBytesPerSec ?? 125_000_000,
      windowSamples: 10,
      minSampleMs: 5,
      capBytesPerSec: o.bandwidthBytesPerSec ?? Infinity,
    });
    this.est = est;
    if (this.bandwidthCap !== undefined) est.setCap(this.bandwidthCap);
    const epochMs = o.epochMs ?? 100;
    const perFrame = o.pagesPerFrame ?? 64;
    const stepTimeout = o.stepTimeoutMs ?? 30_000;
    const zeroDigest = zeroPageDigest(pageSize);
    /** Digest of what the target holds or will hold once in-flight batches land. */
    const sentDigests = new BigUint64Array(pageCount);
    const stale = new PageSet(pageCount);
    const everSent = new PageSet(pageCount);
    let everSentCount = 0;
    /** Pages that differed from the target at the first scan and have not been sent since. */
    let initialPending: PageSet | null = null;
    let initialLeft = -1;
    const scanMode = o.scan ?? 'auto';
    const overlapScans = o.overlapScans ?? true;
    const batchBuf = Buffer.allocUnsafe(pageSize * perFrame);
    const rawFrames = (o.codec ?? 'none') === 'none' && hasFastPagesFrame;
    const srcPos = new Uint32Array(perFrame);
    let lanes: Lane[] = [];
    const inflightCount = (): number => {
      let n = 0;
      for (const l of lanes) n += l.inflight.size;
      return n;
    };
    const wantStreams = Math.max(1, Math.min(16, Math.floor(o.streams ?? 1)));
    let seq = 0;
    let acked = 0;
    let sentBytes = 0;
    let ch: FrameChannel | undefined;
    let linkError: PresyncError | undefined;
    let drainWaiters: Array<() => void> = [];
    let verifyWaiter: ((f: VerifyReply) => void) | undefined;
    /** The target answers VERIFY_SUMMARY (negotiated in the handshake). */
    let summaryVerify = false;
    /** The target reports pages it found damaged in its file (HAVE during presync; negotiated). */
    let targetRepairs = false;
    let handoverWaiter: (() => void) | undefined;
    let failWaiters: Array<(e: PresyncError) => void> = [];
    let epoch = 0;
    let paused = false;
    /** A pause the policy asked to start early (startPause), still taking effect or done. */
    let pausing: Promise<void> | undefined;
    let residualPagesAtLaunch = 0;
    let converged = true;
    let liveRounds = 0;
    let pausedAt = -1;
    let handoverSent = false;

    const refreshStale = (pages: Iterable<number> | null): void => {
      if (pages === null) {
        for (let p = 0; p < pageCount; p++) {
          if (scanner.digests[p] !== sentDigests[p]) stale.add(p);
          else stale.delete(p);
        }
        return;
      }
      for (const p of pages) {
        if (scanner.digests[p] !== sentDigests[p]) stale.add(p);
        else stale.delete(p);
      }
    };

    const onLinkFailure = (e: PresyncError): void => {
      linkError ??= e;
      const ws = failWaiters;
      failWaiters = [];
      drainWaiters = [];
      for (const w of ws) w(e);
    };

    const waitFor = <T>(register: (resolve: (v: T) => void) => void, what: string, timeoutMs: number): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        if (linkError) {
          reject(linkError);
          return;
        }
        const timer = setTimeout(() => reject(new PresyncError(ErrorCodes.TIMEOUT, `target did not ${what} within ${timeoutMs} ms`)), timeoutMs);
        failWaiters.push((e) => {
          clearTimeout(timer);
          reject(e);
        });
        register((v) => {
          clearTimeout(timer);
          resolve(v);
        });
      });

    const pump = async (lane: Lane): Promise<void> => {
      const c = lane.ch;
      try {
        for (;;) {
          const f: Frame = await c.recv();
          if (f.type === 'ack') {
            const now = this.now();
            for (const [s, fl] of lane.inflight) {
              if (s > f.seq) break;
              ledger.onDelivered(fl.bytes);
              est.onAcked(fl.bytes, fl.stamp, now);
              lane.inflight.delete(s);
            }
            acked = Math.max(acked, f.seq);
            if (inflightCount() === 0) {
              const ws = drainWaiters;
              drainWaiters = [];
              for (const w of ws) w();
            }
          } else if (f.type === 'pong') {
            const sentAt = Number(f.nonce) / 1000;
            est.onRttSample(this.now() - sentAt);
          } else if (f.type === 'ping') {
            await c.send({ type: 'pong', nonce: f.nonce });
          } else if (f.type === 'verify-response' || f.type === 'verify-summary-response') {
            const w = verifyWaiter;
            verifyWaiter = undefined;
            if (!w) throw new PresyncError(ErrorCodes.PROTOCOL, 'VERIFY_RESPONSE nobody asked for');
            w(f);
          } else if (f.type === 'have' && targetRepairs) {
            // The target's file holds other bytes there than we sent: it holds what it says, so those pages are stale again.
            sentDigests.set(f.digests, f.first);
            if (scanner.hasBaseline) refreshStale(Array.from({ length: f.digests.length }, (_, i) => f.first + i));
          } else if (f.type === 'handover-done') {
            const w = handoverWaiter;
            handoverWaiter = undefined;
            if (!w) throw new PresyncError(ErrorCodes.PROTOCOL, 'HANDOVER_DONE before HANDOVER');
            w();
          } else {
            throw new PresyncError(ErrorCodes.PROTOCOL, `unexpected ${f.type} frame from the target`);
          }
        }
      } catch (e) {
        // A lane already replaced by a reconnect is no news. Only the control
        // connection answers HANDOVER: a data stream's ERROR is a broken link.
        const err = toPresyncError(e, ErrorCodes.CONNECTION);
        if (lanes.includes(lane)) onLinkFailure(lane === lanes[0] || !(err instanceof PeerReportedError) ? err : new PresyncError(err.code, err.message));
        // An abort closes the connection itself, gracefully, once the target has read ABORT.
        if (!this.abortError) c.destroy();
      }
    };

    const destroyLanes = (): void => {
      for (const l of lanes) l.ch.destroy();
    };

    // abort(): every wait ends at once; a send stuck on a stalled link ends
    // when its connection is destroyed, after the target had a moment to hear ABORT.
    let connecting: FrameChannel | undefined;
    this.onAbort = (e) => {
      onLinkFailure(e);
      connecting?.destroy();
      const c = ch;
      void (async () => {
        if (c) {
          await Promise.race([c.send({ type: 'abort', reason: `${e.code}: ${e.message}`.slice(0, 1000) }).catch(() => undefined), sleep(300)]);
          await Promise.race([c.close().then(() => c.conn.closed), sleep(1000)]).catch(() => undefined);
        }
        destroyLanes();
      })();
    };

    /** Opens a data connection joining session `sessionId`. */
    const join = async (sessionId: string): Promise<FrameChannel> => {
      const c = new FrameChannel(await o.transport.dial(o.to, { timeoutMs: 10_000 }));
      try {
        const hs = new ClientHandshake({ secret: o.secret, geometry, imageId, sessionId, lineageId: this.lineageId, capabilities: localCodecCapabilities() | Capability.STREAMS | Capability.JOIN });
        await c.handshake(hs, { opening: hs.start(), timeoutMs: 10_000 });
        return c;
      } catch (e) {
        c.destroy();
        throw e;
      }
    };

    const connect = async (attempt: number): Promise<void> => {
      const conn = await o.transport.dial(o.to, { timeoutMs: 10_000 });
      const c = new FrameChannel(conn);
      connecting = c;
      let resumed = false;
      const sessionId = randomBytes(8).toString('hex');
      const extra: FrameChannel[] = [];
      try {
        const hs = new ClientHandshake({ secret: o.secret, geometry, imageId, sessionId, lineageId: this.lineageId });
        const result = await c.handshake(hs, { opening: hs.start(), timeoutMs: 10_000 });
        resumed = result.resume;
        summaryVerify = (result.capabilities & Capability.VERIFY_SUMMARY) !== 0;
        targetRepairs = (result.capabilities & Capability.REVERIFY) !== 0;
        if (result.resume) {
          const col = new DigestRunCollector(pageCount);
          let table: BigUint64Array | undefined;
          while (!table) {
            const f = await c.recv(10_000);
            if (f.type !== 'have') throw new PresyncError(ErrorCodes.PROTOCOL, `expected HAVE, got ${f.type}`);
            table = col.add(f);
          }
          sentDigests.set(table);
        } else {
          sentDigests.fill(zeroDigest);
        }
        if (wantStreams > 1 && (result.capabilities & Capability.STREAMS) !== 0) {
          for (let k = 1; k < wantStreams; k++) extra.push(await join(sessionId));
        }
      } catch (e) {
        for (const x of extra) x.destroy();
        // The target hears why (PRESYNC_ERR_AUTH for a wrong secret), unless it told us or the link is gone.
        const err = toPresyncError(e, ErrorCodes.CONNECTION);
        if (this.abortError || err instanceof PeerReportedError || err.code === ErrorCodes.CONNECTION || err.code === ErrorCodes.TIMEOUT) c.destroy();
        else await c.abortWith(err);
        throw this.abortError ?? e;
      } finally {
        connecting = undefined;
      }
      if (this.abortError) {
        for (const x of extra) x.destroy();
        c.destroy();
        throw this.abortError;
      }
      destroyLanes();
      est.resetFlight();
      sentBytes = 0;
      acked = 0;
      seq = 0;
      linkError = undefined;
      ch = c;
      lanes = [c, ...extra].map((x) => ({ ch: x, inflight: new Map<number, InFlight>() }));
      if (scanner.hasBaseline) refreshStale(null);
      for (const l of lanes) void pump(l);
      const stalePages = stale.count();
      this.emit({ event: 'connected', resume: resumed, stalePages, attempt, heldPages: scanner.hasBaseline ? pageCount - stalePages : 0, sentBeforePages: everSent.count() });
    };

    const reconnect = async (): Promise<void> => {
      const attempts = o.reconnectAttempts ?? 8;
      let delay = 100;
      let last: PresyncError | undefined;
      for (let a = 1; a <= attempts; a++) {
        await this.sleepUnlessAborted(delay);
        if (this.abortError) throw this.abortError;
        delay = Math.min(delay * 2, 5000);
        try {
          await connect(a);
          return;
        } catch (e) {
          last = toPresyncError(e, ErrorCodes.CONNECTION);
          // Only a broken network is worth retrying; a refusal is final.
          if (last.code !== ErrorCodes.CONNECTION && last.code !== ErrorCodes.TIMEOUT) throw last;
        }
      }
      throw last ?? new PresyncError(ErrorCodes.CONNECTION, 'reconnect failed');
    };

    /** Sends a prefix of `list` within `budget` bytes; returns bytes and pages sent. */
    const sendPages = async (list: ArrayLike<number>, budget: number): Promise<{ bytes: number; pages: number }> => {
      let bytes = 0;
      let pages = 0;
      let i = 0;
      let pending = 0;
      const ls = lanes;
      const approx = pageSize + 24;
      const batches: number[][] = ls.map(() => []);
      const sent = (lane: Lane, s: number, n: number): void => {
        lane.inflight.set(s, { bytes: n, stamp: est.onSent(n, this.now()) });
        sentBytes += n;
        acct.onBytes(n);
        bytes += n;
      };
      // Pages of a batch are read in runs of consecutive indices: one copy (or pread) per run.
      let idx: number[] = [];
      const readBatch = (): void => {
        let k = 0;
        while (k < idx.length) {
          let e = k + 1;
          while (e < idx.length && idx[e] === idx[e - 1] + 1) e++;
          reader.readPages(idx[k], e - k, batchBuf.subarray(k * pageSize));
          k = e;
        }
      };
      const encodeBatch = async (laneNo: number): Promise<void> => {
        const lane = ls[laneNo];
        idx = batches[laneNo];
        if (idx.length === 0) return;
        pending -= idx.length;
        const c = lane.ch;
        if (rawFrames) {
          // The whole frame in one buffer; pages copied straight from the mapped
          // image into it and hashed from that copy (one pass over the data).
          let lo = idx[0];
          let hi = idx[0];
          for (const p of idx) {
            if (p < lo) lo = p;
            if (p > hi) hi = p;
          }
          const view = reader.view(lo, hi - lo + 1);
          const s = ++seq;
          let enc;
          if (view) {
            for (let q = 0; q < idx.length; q++) srcPos[q] = idx[q] - lo;
            enc = encodeRawPagesFrame(s, idx, view, pageSize, { srcPos: srcPos.subarray(0, idx.length) });
          } else {
            readBatch();
            enc = encodeRawPagesFrame(s, idx, batchBuf, pageSize);
          }
          for (let q = 0; q < idx.length; q++) sentDigests[idx[q]] = enc.digests[q];
          idx.length = 0;
          sent(lane, s, await c.sendEncoded(enc.frame));
          return;
        }
        readBatch();
        const batch: PageRecord[] = [];
        for (let q = 0; q < idx.length; q++) {
          const p = idx[q];
          const rec = encodePage(p, batchBuf.subarray(q * pageSize, (q + 1) * pageSize), { pageSize, codec: o.codec ?? 'none' });
          batch.push(rec);
          sentDigests[p] = rec.digest;
        }
        idx.length = 0;
        const s = ++seq;
        sent(lane, s, await c.send(pagesFrame(s, batch)));
      };
      for (; i < list.length; i++) {
        const p = list[i];
        if (!stale.has(p)) continue;
        if (bytes + (pending + 1) * approx > budget) break;
        const laneNo = ls.length === 1 ? 0 : (p >>> STRIPE_SHIFT) % ls.length;
        batches[laneNo].push(p);
        pending++;
        stale.delete(p);
        acct.onPageSent(p);
        if (!everSent.has(p)) {
          everSent.add(p);
          everSentCount++;
          if (initialPending?.has(p) === true) initialLeft--;
        }
        pages++;
        if (batches[laneNo].length >= perFrame) {
          await encodeBatch(laneNo);
          // Let acknowledgements in: an await that never blocks never reaches the I/O phase.
          if (seq % 16 === 0) await new Promise<void>((r) => setImmediate(r));
        }
        if (linkError) throw linkError;
      }
      for (let k = 0; k < ls.length; k++) await encodeBatch(k);
      ledger.onSend(bytes, pages, i);
      return { bytes, pages };
    };

    const observe = (phase: 'presync' | 'launched', dirty: PageSet, stepMs: number): EpochObservation => {
      const { consumed, wireBytesPerPage, offeredBytes, deliveredBytes } = ledger.observe();
      return {
        epoch,
        timeMs: this.now(),
        epochMs: stepMs,
        phase,
        geometry,
        dirty,
        stale,
        net: {
          bandwidthBytesPerSec: est.bandwidthBytesPerSec,
          rttMs: est.rttMs,
          rttSamples: est.rttSamples,
          bytesInFlight: est.bytesInFlight,
          offeredBytes,
          deliveredBytes,
        },
        guestSlowdown: 0,
        consumed,
        wireBytesPerPage,
        ...(phase === 'launched' ? { launchedAtMs: this.launchRequestedAt, pauseLagMs: o.controller.pauseLagMs ?? 0 } : {}),
        ...(this.downtimeLimitMs !== undefined ? { downtimeLimitMs: this.downtimeLimitMs } : {}),
      };
    };

    const updateStatus = (phase: Phase, rate: number, dirtyPages = 0): void => {
      const st = stale.count();
      const bw = est.bandwidthBytesPerSec;
      this.status = {
        phase,
        elapsedMs: this.now(),
        pageCount,
        inSyncPages: pageCount - st,
        inSyncPercent: Math.floor(((pageCount - st) / pageCount) * 1000) / 10,
        stalePages: st,
        rateBytesPerSec: rate,
        bandwidthBytesPerSec: bw,
        presyncBytes: acct.presyncBytes,
        finalBytes: acct.finalBytes,
        expectedDowntimeMs: ledger.expectedDowntimeMs(st, bw, est.rttMs),
        epoch,
        pageSize,
        dirtyPages,
        initialCopyDone: initialLeft === 0,
      };
    };

    const drain = (c: FrameChannel): Promise<void> =>
      inflightCount() === 0 ? Promise.resolve() : waitFor<void>((r) => drainWaiters.push(() => r()), 'acknowledge every page', stepTimeout).then(() => void c);

    const record = (phase: 'presync' | 'launched', t0: number, d: EpochDecision, sent: { bytes: number; pages: number }, dirty: number, delivered: number): void => {
      const stepMs = Math.max(1e-3, this.now() - t0);
      acct.point({
        tMs: this.now(),
        phase,
        sentBytes: sent.bytes,
        sentPages: sent.pages,
        deliveredBytes: delivered,
        budgetBytes: Number.isFinite(d.budgetBytes) ? d.budgetBytes : -1,
        dirtyPages: dirty,
        stalePages: stale.count(),
        rttMs: est.rttMs,
        throughputBytesPerSec: (sent.bytes / stepMs) * 1000,
        ...(d.diag ? { diag: d.diag } : {}),
      });
    };

    const finish = (outcome: 'done' | 'rolled-back', err: PresyncError | null, verified: boolean, resumedAt: number): MigrationResult => ({
      outcome,
      error: err ? { code: err.code, message: err.message } : null,
      launchToRunningMs: outcome === 'done' ? resumedAt - this.launchRequestedAt : null,
      downtimeMs: outcome === 'done' ? resumedAt - pausedAt : null,
      presyncBytes: acct.presyncBytes,
      finalBytes: acct.finalBytes,
      residualPagesAtLaunch,
      wastedPages: acct.wastedPages,
      resentPages: acct.resentPages,
      guestSlowdown: 0,
      verified,
      converged,
      liveRounds,
      series: acct.series,
    });

    try {
      // ---- connect and presync until launch.
      this.toPhase('presync');
      await connect(0);
      scanner.scan();
      refreshStale(null);
      initialPending = PageSet.copyOf(stale);
      initialLeft = initialPending.count();
      updateStatus('presync', 0);
      let lastEpochStart = -1;
      let nextScan: Promise<PageSet> | undefined;
      const presyncScan = (): Promise<PageSet> => {
        const incremental = scanMode === 'incremental' || (scanMode === 'auto' && everSentCount < pageCount);
        // Stale pages go out whatever they hold: the slice leaves them out (recent writes are still checked).
        return incremental ? scanner.scanIncremental({ sliceFraction: 1 / 8, skip: stale }) : scanner.scanAsync();
      };
      while (!this.launched) {
        if (this.stopRequested) throw new PresyncError(ErrorCodes.ABORTED, 'stopped before launch');
        if (!o.controller.isAlive()) throw new PresyncError(ErrorCodes.GUEST_GONE, `the guest (${o.controller.kind}) is gone: it exited during presync; nothing was handed over`);
        // Process acknowledgements that arrived while we scanned or sent, before observing.
        await new Promise<void>((r) => setImmediate(r));
        const t0 = this.now();
        const dirty = epoch === 0 ? new PageSet(pageCount) : await (nextScan ?? presyncScan());
        nextScan = undefined;
        if (epoch > 0) refreshStale(dirty);
        acct.onWrites(dirty);
        // The epoch really lasted as long as its scan and sends took, if longer than planned.
        const d = o.policy.decide(observe('presync', dirty, lastEpochStart < 0 ? epochMs : Math.max(epochMs, t0 - lastEpochStart)));
        lastEpochStart = t0;
        let sent = { bytes: 0, pages: 0 };
        // The next epoch's scan hashes on a worker thread while this epoch's pages go out.
        if (overlapScans) {
          nextScan = presyncScan();
          // Awaited next epoch; if the migration ends first, its failure must not go unhandled.
          nextScan.catch(() => undefined);
        }
        try {
          if (linkError) throw linkError;
          sent = await sendPages(d.send, d.budgetBytes);
          await ch!.send({ type: 'ping', nonce: BigInt(Math.round(this.now() * 1000)) });
        } catch (e) {
          if (this.abortError) throw this.abortError;
          const err = toPresyncError(e, ErrorCodes.CONNECTION);
          // A frame damaged in transit (either end's CRC caught it) is the link's fault too:
          // nothing bad was applied, so a fresh connection resumes from the target's digests.
          if (err.code !== ErrorCodes.CONNECTION && err.code !== ErrorCodes.TIMEOUT && err.code !== ErrorCodes.CHECKSUM) throw err;
          this.emit({ event: 'disconnected', error: { code: err.code, message: err.message } });
          destroyLanes();
          await reconnect();
        }
        record('presync', t0, d, sent, dirty.count(), 0);
        updateStatus('presync', (sent.bytes / Math.max(1, this.now() - t0)) * 1000, dirty.count());
        this.emit({ event: 'progress', status: this.status });
        epoch++;
        const left = t0 + epochMs - this.now();
        if (left > 0 && !this.launched) await new Promise<void>((r) => {
          const timer = setTimeout(r, left);
          this.launchWaiter = () => {
            clearTimeout(timer);
            r();
          };
        });
        this.launchWaiter = undefined;
      }

      if (nextScan) {
        // What the scan in flight saw is news: its pages are compared only once.
        const d = await nextScan;
        nextScan = undefined;
        refreshStale(d);
        acct.onWrites(d);
      }
      // ---- launched: live rounds until the policy says the pause will be short.
      if (linkError) await reconnect();
      this.toPhase('launched');
      acct.onLaunch();
      const c = ch!;
      await c.send({ type: 'phase', phase: 'launched' });
      let lastT = this.now();
      let firstLaunchedScan = true;
      let probe: { readonly pages: Uint32Array; readonly at: number } | undefined;
      let aheadOfPause: { readonly d: EpochDecision; readonly t0: number; readonly dirtyPages: number } | undefined;
      for (;;) {
        let dirty: PageSet;
        if (probe) {
          // A close look at a few hot pages: the rest of the guest is left to the final scan.
          const wait = probe.at - this.now();
          if (wait > 0) await sleep(wait);
          // A pause started early has taken effect: the guest writes nothing
          // more, so there is nothing left to watch for; the rest is the final copy's.
          if (pausing && pausedAt >= 0) break;
          dirty = scanner.scanPages(probe.pages);
          probe = undefined;
        } else {
          // The first scan after launch follows a presync scan by at most an
          // epoch: the pages written since are among the recent writes or in the
          // rotating slice, or else they are caught by the final scan, which is
          // full. A full scan here would add its whole cost to launch→running.
          const quick = firstLaunchedScan && scanMode !== 'full';
          dirty = quick ? await scanner.scanIncremental({ sliceFraction: 1 / 8, skip: stale }) : await scanner.scanAsync();
        }
        const t0 = this.now();
        refreshStale(dirty);
        if (firstLaunchedScan) {
          // Pages the target lacks at the moment of launch (in-flight pages are on their way).
          residualPagesAtLaunch = stale.count();
          firstLaunchedScan = false;
        }
        const d = o.policy.decide(observe('launched', dirty, Math.max(1, t0 - lastT)));
        lastT = t0;
        if (d.diag && typeof d.diag.round === 'number') liveRounds = Math.max(liveRounds, d.diag.round);
        if (d.switchover) {
          converged = d.converged ?? true;
          if (d.abort) throw new PresyncError(ErrorCodes.NO_CONVERGENCE, `policy ${o.policy.name} could not converge under its downtime limit`);
          if (d.send.length > 0) aheadOfPause = { d, t0, dirtyPages: dirty.count() };
          break;
        }
        if (d.startPause && d.probe && !pausing) {
          // The guest stops after the controller's lag; the probes go on meanwhile.
          pausing = o.controller.pause().then(() => {
            pausedAt = this.now();
            this.emit({ event: 'paused', atMs: pausedAt });
          });
          pausing.catch(() => undefined);
        }
        const sent = await sendPages(d.send, d.budgetBytes);
        if (d.probe) probe = { pages: d.probe.pages, at: t0 + d.probe.afterMs };
        else await drain(c);
        record('launched', t0, d, sent, dirty.count(), sent.bytes);
        epoch++;
      }
      // Pages the policy sends just ahead of the pause, while the guest still
      // runs. The pause starts when what is left of them on the wire takes no
      // longer than the guest takes to stop (QEMU runs on while it sets up its
      // stream): with a short enough send, at once, alongside it.
      let ahead: Promise<{ bytes: number; pages: number }> | undefined;
      if (aheadOfPause) {
        ahead = sendPages(aheadOfPause.d.send, Infinity);
        // Settled here so that a failure while the pause is under way is not unhandled; it is rethrown below.
        ahead.catch(() => undefined);
      }
      // Probes do not wait for their sends: those still crossing count too.
      const lead = Math.max(0, o.controller.pauseLagMs ?? 0);
      // Sized as the policy sized it, from the observed bytes per page.
      const aheadBytes = (aheadOfPause?.d.send.length ?? 0) * ledger.wireBytesPerPage;
      if (!pausing && ((aheadBytes + est.bytesInFlight) / Math.max(1, est.bandwidthBytesPerSec)) * 1000 > lead) {
        if (ahead) await ahead;
        const t1 = this.now();
        while (inflightCount() > 0 && (est.bytesInFlight / Math.max(1, est.bandwidthBytesPerSec)) * 1000 > lead) {
          if (linkError) throw linkError;
          if (this.now() - t1 > stepTimeout) throw new PresyncError(ErrorCodes.TIMEOUT, `pages sent ahead of the pause were not acknowledged within ${stepTimeout} ms`);
          await sleep(1);
        }
      }

      // ---- switchover: the guest is paused from here until handover or rollback.
      this.toPhase('final-copy');
      await c.send({ type: 'phase', phase: 'final-copy' });
      if (pausing) await pausing;
      else {
        await o.controller.pause();
        pausedAt = this.now();
        this.emit({ event: 'paused', atMs: pausedAt });
      }
      paused = true;
      // The final scan is always full. It runs on worker threads while the
      // pages already known stale go out: the guest is paused, so what they
      // hold now is final and the scan will find them in sync; the scan's
      // cost hides behind the link instead of adding to the pause.
      // With little to send, nothing hides the scan: the blocking scan on two
      // threads is then the shorter one.
      const aheadSent = async (): Promise<void> => {
        if (!ahead || !aheadOfPause) return;
        const sent = await ahead;
        record('launched', aheadOfPause.t0, aheadOfPause.d, sent, aheadOfPause.dirtyPages, sent.bytes);
      };
      if (stale.count() + (aheadOfPause?.d.send.length ?? 0) >= OVERLAP_FINAL_SCAN_MIN_PAGES) {
        // Two lanes (one per scan thread): with pages sent ahead of the
        // pause the residual shrank and the scan, not the link, was the longer
        // of the two on one lane (final scan 28-45 ms against sends handed
        // over by 12 ms).
        const finalScan = scanner.scanAsync();
        await aheadSent();
        await sendPages(stale.toArray(), Infinity);
        await finalScan;
      } else {
        await aheadSent();
        scanner.scan();
      }
      refreshStale(null);
      await sendPages(stale.toArray(), Infinity);
      await drain(c);

      this.toPhase('verify');
      await c.send({ type: 'phase', phase: 'verify' });
      let verified = false;
      if (summaryVerify) {
        // 32 bytes instead of 8 per page; the table itself goes only if they differ.
        const reply = waitFor<VerifyReply>((r) => (verifyWaiter = r), 'answer the verify summary', stepTimeout);
        await c.send(verifySummary(scanner.digests));
        const v = await reply;
        if (v.type !== 'verify-summary-response') throw new PresyncError(ErrorCodes.PROTOCOL, `VERIFY_SUMMARY answered with ${v.type}`);
        verified = v.match;
      }
      for (let attempt = 0; attempt < 2 && !verified; attempt++) {
        const reply = waitFor<VerifyReply>((r) => (verifyWaiter = r), 'answer the verify request', stepTimeout);
        for (const f of digestRunFrames('verify-request', scanner.digests)) await c.send(f);
        const v = await reply;
        if (v.type !== 'verify-response') throw new PresyncError(ErrorCodes.PROTOCOL, `VERIFY_REQUEST answered with ${v.type}`);
        verified = v.match;
        if (!verified) {
          if (v.mismatches.length < v.mismatchCount) break;
          // The target's copy of these pages differs from ours: send them again once.
          for (const p of v.mismatches) stale.add(p);
          await sendPages(v.mismatches, Infinity);
          await drain(c);
        }
      }
      if (!verified) throw new PresyncError(ErrorCodes.VERIFY, 'the target image still differs from the source after the final copy');

      if (o.deviceState) {
        const state = await o.deviceState();
        const chunk = 1 << 20;
        for (let off = 0; off === 0 || off < state.length; off += chunk) {
          await c.send({ type: 'device-state', totalLength: state.length, offset: off, data: state.subarray(off, off + chunk) });
          if (state.length === 0) break;
        }
      }
      // Still in verify: a failed commit (e.g. QEMU's device-state stream
      // failing because the target QEMU died) must be able to roll back,
      // and the phase machine allows no rollback from handover.
      await o.controller.commit();
      // Announced while still in verify: a connection that breaks here, before
      // HANDOVER left, must roll back, and handover → rollback is illegal.
      await c.send({ type: 'phase', phase: 'handover' });
      const done = waitFor<void>((r) => (handoverWaiter = r), 'confirm the handover', stepTimeout);
      handoverSent = true;
      this.toPhase('handover');
      await c.send({ type: 'handover' });
      await done;
      const resumedAt = this.now();
      this.toPhase('done');
      // Only now is the source copy released: the guest runs on the target.
      await o.controller.release().catch(() => undefined);
      for (const l of lanes.slice(1)) await l.ch.close();
      await c.close();
      updateStatus('done', 0);
      return finish('done', null, true, resumedAt);
    } catch (e) {
      const err = this.abortError ?? toPresyncError(e);
      const phase = this.phases.phase;
      // The target answering HANDOVER with ERROR has started nothing (its hook
      // failed, or it failed before running it): that is a rollback, not a doubt.
      if (handoverSent && !(err instanceof PeerReportedError)) {
        // The target may have started the guest: resuming here could run it
        // twice. The source image is untouched and the guest stays paused
        // until someone checks the target.
        destroyLanes();
        const doubt = new PresyncError(
          ErrorCodes.HANDOVER_IN_DOUBT,
          `handover sent but not confirmed (${err.code}: ${err.message}); the guest stays paused on the source and its image is intact: check the target, then resume the source only if the guest does not run there`,
        );
        updateStatus(phase, 0);
        return { ...finish('rolled-back', doubt, false, 0), outcome: 'in-doubt' };
      }
      if (phase !== 'rollback' && phase !== 'done') this.toPhase('rollback', err.message);
      if (paused || pausing || guestPausedIn(phase)) {
        // A pause still taking effect is let finish first: resuming midway could leave QEMU migrating.
        await pausing?.catch(() => undefined);
        await o.controller.resume().catch(() => undefined);
      }
      if (ch) {
        try {
          await Promise.race([ch.send({ type: 'abort', reason: `${err.code}: ${err.message}`.slice(0, 1000) }), sleep(500)]);
        } catch {
          /* the target may be gone */
        }
        // Closed, not cut: a reset would drop the ABORT still in flight, or
        // fail the target's next write before it reads it. It closes its end once it has.
        await Promise.race([ch.close().then(() => ch!.conn.closed), sleep(1000)]).catch(() => undefined);
        destroyLanes();
        ch.destroy();
      }
      updateStatus('rollback', 0);
      return finish('rolled-back', err, false, 0);
    } finally {
      this.onAbort = undefined;
      reader.close();
    }
  }

  /** Abandons a migration that has not been launched. */
  stop(): void {
    this.stopRequested = true;
    this.launchWaiter?.();
  }

  /**
   * Rolls the migration back from whatever phase it is in (a signal, an
   * operator's abort): the guest is resumed, the target told (ABORT) and
   * run() returns `rolled-back` with PRESYNC_ERR_ABORTED. Once HANDOVER has
   * gone out nothing can be undone: run() returns `in-doubt` and the guest
   * stays paused. Idempotent; a no-op after run() has returned.
   */
  abort(reason: string): void {
    if (this.abortError) return;
    this.abortError = new PresyncError(ErrorCodes.ABORTED, reason);
    this.stopRequested = true;
    this.launchWaiter?.();
    this.onAbort?.(this.abortError);
  }

  get aborted(): boolean {
    return this.abortError !== undefined;
  }

  /** Sleeps `ms`, or less if abort() is called meanwhile. */
  private sleepUnlessAborted(ms: number): Promise<void> {
    if (this.abortError) return Promise.resolve();
    const prev = this.onAbort;
    return new Promise<void>((r) => {
      const timer = setTimeout(r, ms);
      this.onAbort = (e) => {
        clearTimeout(timer);
        r();
        prev?.(e);
      };
    }).finally(() => {
      if (!this.abortError) this.onAbort = prev;
    });
  }
}
