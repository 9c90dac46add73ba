import { randomBytes } from 'node:crypto';
import { ErrorCodes, PeerReportedError, PresyncError, toPresyncError } from '../core/errors.ts';
import type { SendStamp } from '../core/net-estimator.ts';
import { zeroPageDigest } from '../native/page-digest.ts';
import { sleep } from '../transport/deadline.ts';
import type { Transport, TransportAddress } from '../transport/types.ts';
import { Capability } from '../wire/constants.ts';
import { DigestRunCollector } from '../wire/digest-runs.ts';
import type { Frame, VerifyResponseFrame, VerifySummaryResponseFrame } from '../wire/frames.ts';
import { ClientHandshake } from '../wire/handshake.ts';
import { localCodecCapabilities } from '../wire/page-codecs.ts';
import { FrameChannel } from './frame-channel.ts';
import type { SourceState } from './source-state.ts';

export type VerifyReply = VerifyResponseFrame | VerifySummaryResponseFrame;

interface InFlight {
  readonly bytes: number;
  readonly stamp: SendStamp;
}

/** One connection pages travel on; lane 0 is the control connection. */
export interface Lane {
  readonly ch: FrameChannel;
  /** Batches sent on this connection and not yet acknowledged (acks are cumulative per connection). */
  readonly inflight: Map<number, InFlight>;
}

export interface SourceLinkOptions {
  readonly transport: Transport;
  readonly to: TransportAddress;
  readonly secret: Uint8Array;
  readonly imageId: string;
  readonly lineageId: string;
  /** Connections to sync over, 1–16 (the target may offer only one). */
  readonly streams: number;
  readonly reconnectAttempts: number;
  /** Give up waiting for the target's answer after this long, ms. */
  readonly stepTimeoutMs: number;
  /** Milliseconds since the migration started. */
  now(): number;
  /** A connection is up (first or after a reconnect): the target holds `heldPages` of what we have. */
  onConnected(e: { resume: boolean; stalePages: number; attempt: number; heldPages: number; sentBeforePages: number }): void;
}

/**
 * The source's connections to the target: connect (handshake, the target's
 * HAVE table on resume, extra data streams joining), reconnect with backoff,
 * and one reader per connection that takes acknowledgements, RTT samples and
 * the target's answers. What the target holds is kept in the state's
 * sentDigests; a broken link fails every wait at once.
 */
export class SourceLink {
  lanes: Lane[] = [];
  /** The control connection (lane 0), once connected. */
  ch: FrameChannel | undefined;
  /** Sequence number of the last PAGES batch sent on this connection set. */
  seq = 0;
  acked = 0;
  linkError: PresyncError | undefined;
  /** The target answers VERIFY_SUMMARY (negotiated in the handshake). */
  summaryVerify = false;
  /** The target reports pages it found damaged in its file (HAVE during presync; negotiated). */
  targetRepairs = false;
  private drainWaiters: Array<() => void> = [];
  private failWaiters: Array<(e: PresyncError) => void> = [];
  private verifyWaiter: ((f: VerifyReply) => void) | undefined;
  private handoverWaiter: (() => void) | undefined;
  /** Set by abortNow(): every wait has ended and the connections close once the target heard ABORT. */
  aborting: PresyncError | undefined;
  /** The connection being set up, so an abort can cut its handshake short. */
  private connecting: FrameChannel | undefined;
  /** Cuts a reconnect's backoff short. */
  private wake: (() => void) | undefined;

  constructor(
    private readonly o: SourceLinkOptions,
    private readonly s: SourceState,
  ) {}

  get inflightCount(): number {
    let n = 0;
    for (const l of this.lanes) n += l.inflight.size;
    return n;
  }

  /** The control connection; throws if there is none (a bug: phases run only once connected). */
  get control(): FrameChannel {
    if (!this.ch) throw new PresyncError(ErrorCodes.INTERNAL, 'no connection to the target');
    return this.ch;
  }

  /** Dials, authenticates, reads the HAVE table on resume, joins extra streams; replaces the previous connection set. */
  async connect(attempt: number): Promise<void> {
    const { o, s } = this;
    const c = new FrameChannel(await o.transport.dial(o.to, { timeoutMs: 10_000 }));
    this.connecting = c;
    let resumed = false;
    const sessionId = randomBytes(8).toString('hex');
    const extra: FrameChannel[] = [];
    try {
      const segments = s.reader.segments;
      const hs = new ClientHandshake({ secret: o.secret, geometry: s.geometry, imageId: o.imageId, sessionId, lineageId: o.lineageId, ...(segments ? { segments } : {}) });
      const result = await c.handshake(hs, { opening: hs.start(), timeoutMs: 10_000 });
      resumed = result.resume;
      this.summaryVerify = (result.capabilities & Capability.VERIFY_SUMMARY) !== 0;
      this.targetRepairs = (result.capabilities & Capability.REVERIFY) !== 0;
      if (result.resume) s.sentDigests.set(await readHaveTable(c, s.pageCount));
      else s.sentDigests.fill(zeroPageDigest(s.pageSize));
      if (o.streams > 1 && (result.capabilities & Capability.STREAMS) !== 0) {
        for (let k = 1; k < o.streams; k++) extra.push(await this.join(sessionId));
      }
    } catch (e) {
      for (const x of extra) x.destroy();
      // The target hears why (PRESYNC_ERR_AUTH for a wrong secret), unless it told us or the link is gone.
      const err = toPresyncError(e, ErrorCodes.CONNECTION);
      if (this.aborting || err instanceof PeerReportedError || err.code === ErrorCodes.CONNECTION || err.code === ErrorCodes.TIMEOUT) c.destroy();
      else await c.abortWith(err);
      throw this.aborting ?? e;
    } finally {
      this.connecting = undefined;
    }
    if (this.aborting) {
      for (const x of extra) x.destroy();
      c.destroy();
      throw this.aborting;
    }
    this.destroyLanes();
    s.est.resetFlight();
    this.acked = 0;
    this.seq = 0;
    this.linkError = undefined;
    this.ch = c;
    this.lanes = [c, ...extra].map((x) => ({ ch: x, inflight: new Map<number, InFlight>() }));
    if (s.scanner.hasBaseline) s.refreshStale(null);
    for (const l of this.lanes) void this.pump(l);
    const stalePages = s.stale.count();
    o.onConnected({ resume: resumed, stalePages, attempt, heldPages: s.scanner.hasBaseline ? s.pageCount - stalePages : 0, sentBeforePages: s.everSent.count() });
  }

  /** Opens a data connection joining session `sessionId`. */
  private async join(sessionId: string): Promise<FrameChannel> {
    const { o, s } = this;
    const c = new FrameChannel(await o.transport.dial(o.to, { timeoutMs: 10_000 }));
    try {
      const hs = new ClientHandshake({ secret: o.secret, geometry: s.geometry, imageId: o.imageId, sessionId, lineageId: o.lineageId, capabilities: localCodecCapabilities() | Capability.STREAMS | Capability.JOIN });
      await c.handshake(hs, { opening: hs.start(), timeoutMs: 10_000 });
      return c;
    } catch (e) {
      c.destroy();
      throw e;
    }
  }

  /** Connects again with backoff (100 ms doubling to 5 s); only a broken network is retried, a refusal is final. */
  async reconnect(): Promise<void> {
    let delay = 100;
    let last: PresyncError | undefined;
    for (let a = 1; a <= this.o.reconnectAttempts; a++) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, this.aborting ? 0 : delay);
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.wake = undefined;
      if (this.aborting) throw this.aborting;
      delay = Math.min(delay * 2, 5000);
      try {
        await this.connect(a);
        return;
      } catch (e) {
        last = toPresyncError(e, ErrorCodes.CONNECTION);
        if (last.code !== ErrorCodes.CONNECTION && last.code !== ErrorCodes.TIMEOUT) throw last;
      }
    }
    throw last ?? new PresyncError(ErrorCodes.CONNECTION, 'reconnect failed');
  }

  /** A PAGES batch `seq` of `bytes` went out on `lane`. */
  onSent(lane: Lane, seq: number, bytes: number): void {
    lane.inflight.set(seq, { bytes, stamp: this.s.est.onSent(bytes, this.o.now()) });
  }

  /** Resolves once every batch sent is acknowledged; fails with the link or after the step timeout. */
  drain(): Promise<void> {
    if (this.inflightCount === 0) return Promise.resolve();
    return this.waitFor<void>((r) => this.drainWaiters.push(() => r()), 'acknowledge every page');
  }

  /** Sends the verify frames and waits for the target's answer. */
  async ask(frames: readonly Frame[], what: string): Promise<VerifyReply> {
    const reply = this.waitFor<VerifyReply>((r) => (this.verifyWaiter = r), what);
    // If a send fails, that failure is what the caller hears; the reply's own is then no news.
    reply.catch(() => undefined);
    for (const f of frames) await this.control.send(f);
    return reply;
  }

  /** Registers for HANDOVER_DONE before HANDOVER goes out. */
  handoverDone(): Promise<void> {
    return this.waitFor<void>((r) => (this.handoverWaiter = r), 'confirm the handover');
  }

  destroyLanes(): void {
    for (const l of this.lanes) l.ch.destroy();
  }

  /**
   * Tells the target why we give up (best effort, at most 500 ms), closes the
   * control connection gracefully and waits (up to 1 s) for the target to
   * close its end, then cuts every connection: a reset would drop the ABORT
   * still in flight, or fail the target's next write before it reads it.
   */
  async abort(err: PresyncError): Promise<void> {
    const ch = this.ch;
    if (!ch) return;
    try {
      await Promise.race([ch.send({ type: 'abort', reason: `${err.code}: ${err.message}`.slice(0, 1000) }), sleep(500)]);
    } catch {
      /* the target may be gone */
    }
    await Promise.race([ch.close().then(() => ch.conn.closed), sleep(1000)]).catch(() => undefined);
    this.destroyLanes();
    ch.destroy();
  }

  /**
   * An operator's abort (SourceMigration.abort): every wait fails at once
   * with `err`, a handshake under way is cut, a reconnect's backoff ends, and
   * the target hears ABORT; a send stuck on a stalled link ends when the
   * connections are cut (after at most ~1.3 s).
   */
  abortNow(err: PresyncError): void {
    if (this.aborting) return;
    this.aborting = err;
    this.failed(err);
    this.connecting?.destroy();
    this.wake?.();
    const ch = this.ch;
    if (!ch) return;
    void (async () => {
      await Promise.race([ch.send({ type: 'abort', reason: `${err.code}: ${err.message}`.slice(0, 1000) }).catch(() => undefined), sleep(300)]);
      await Promise.race([ch.close().then(() => ch.conn.closed), sleep(1000)]).catch(() => undefined);
      this.destroyLanes();
    })();
  }

  /** Closes the data streams, then the control connection, gracefully. */
  async close(): Promise<void> {
    for (const l of this.lanes.slice(1)) await l.ch.close();
    await this.ch?.close();
  }

  private failed(e: PresyncError): void {
    this.linkError ??= e;
    const ws = this.failWaiters;
    this.failWaiters = [];
    this.drainWaiters = [];
    for (const w of ws) w(e);
  }

  private waitFor<T>(register: (resolve: (v: T) => void) => void, what: string): Promise<T> {
    const timeoutMs = this.o.stepTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      if (this.linkError) {
        reject(this.linkError);
        return;
      }
      const timer = setTimeout(() => reject(new PresyncError(ErrorCodes.TIMEOUT, `target did not ${what} within ${timeoutMs} ms`)), timeoutMs);
      this.failWaiters.push((e) => {
        clearTimeout(timer);
        reject(e);
      });
      register((v) => {
        clearTimeout(timer);
        resolve(v);
      });
    });
  }

  /** Reads one connection until it breaks. */
  private async pump(lane: Lane): Promise<void> {
    const c = lane.ch;
    try {
      for (;;) await this.onFrame(lane, await c.recv());
    } catch (e) {
      // A lane already replaced by a reconnect is no news. Only the control
      // connection answers HANDOVER: a data stream's ERROR is a broken link.
      const err = toPresyncError(e, ErrorCodes.CONNECTION);
      if (this.lanes.includes(lane)) this.failed(lane === this.lanes[0] || !(err instanceof PeerReportedError) ? err : new PresyncError(err.code, err.message));
      // An abort closes the connection itself, gracefully, once the target has read ABORT.
      if (!this.aborting) c.destroy();
    }
  }

  private async onFrame(lane: Lane, f: Frame): Promise<void> {
    const s = this.s;
    if (f.type === 'ack') {
      const now = this.o.now();
      for (const [seq, fl] of lane.inflight) {
        if (seq > f.seq) break;
        s.ledger.onDelivered(fl.bytes);
        s.est.onAcked(fl.bytes, fl.stamp, now);
        lane.inflight.delete(seq);
      }
      this.acked = Math.max(this.acked, f.seq);
      if (this.inflightCount === 0) {
        const ws = this.drainWaiters;
        this.drainWaiters = [];
        for (const w of ws) w();
      }
    } else if (f.type === 'pong') {
      s.est.onRttSample(this.o.now() - Number(f.nonce) / 1000);
    } else if (f.type === 'ping') {
      await lane.ch.send({ type: 'pong', nonce: f.nonce });
    } else if (f.type === 'verify-response' || f.type === 'verify-summary-response') {
      const w = this.verifyWaiter;
      this.verifyWaiter = undefined;
      if (!w) throw new PresyncError(ErrorCodes.PROTOCOL, 'VERIFY_RESPONSE nobody asked for');
      w(f);
    } else if (f.type === 'have' && this.targetRepairs) {
      // The target's file holds other bytes there than we sent: it holds what it says, so those pages are stale again.
      s.sentDigests.set(f.digests, f.first);
      if (s.scanner.hasBaseline) s.refreshStale(Array.from({ length: f.digests.length }, (_, i) => f.first + i));
    } else if (f.type === 'handover-done') {
      const w = this.handoverWaiter;
      this.handoverWaiter = undefined;
      if (!w) throw new PresyncError(ErrorCodes.PROTOCOL, 'HANDOVER_DONE before HANDOVER');
      w();
    } else {
      throw new PresyncError(ErrorCodes.PROTOCOL, `unexpected ${f.type} frame from the target`);
    }
  }
}

/** The target's HAVE table: the digests of what its image holds, sent on resume. */
async function readHaveTable(c: FrameChannel, pageCount: number): Promise<BigUint64Array> {
  const col = new DigestRunCollector(pageCount);
  for (;;) {
    const f = await c.recv(10_000);
    if (f.type !== 'have') throw new PresyncError(ErrorCodes.PROTOCOL, `expected HAVE, got ${f.type}`);
    const table = col.add(f);
    if (table) return table;
  }
}
