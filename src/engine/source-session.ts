import { randomBytes, createHash } from 'node:crypto';
import { realpathSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { channel } from 'node:diagnostics_channel';
import { ErrorCodes, PresyncError, toPresyncError } from '../core/errors.ts';
import { NetEstimator } from '../core/net-estimator.ts';
import { PhaseMachine, type Phase } from '../core/phase.ts';
import { openSourceImage } from '../guest/segmented-reader.ts';
import { initDigest } from '../native/page-digest.ts';
import { checkLineageId, checkSecretStrength } from '../wire/handshake.ts';
import { PageSender } from './page-sender.ts';
import { SourceLink } from './source-link.ts';
import type { MigrateOptions, MigrationResult, SourceEvent, SourceStatus } from './source-options.ts';
import {
  commitDeviceState,
  connectAndScan,
  finalCopy,
  handover,
  pauseGuest,
  result,
  rollback,
  runLiveRounds,
  runPresync,
  verify,
  type SourceRun,
} from './source-phases.ts';
import { SourceState } from './source-state.ts';

export type { MigrateOptions, MigrationResult, SourceEvent, SourceStatus } from './source-options.ts';

const events = channel('presync:source:event');

export function defaultImageId(path: string, more: readonly string[] = []): string {
  const real = realpathSync(path);
  const h = createHash('sha256').update(`${real}\0${statSync(real).size}`);
  // The other files of a segmented image: each path and size (one file hashes as it always did).
  for (const p of more) {
    const r = realpathSync(p);
    h.update(`\0${r}\0${statSync(r).size}`);
  }
  return `${basename(real)}-${h.digest('hex').slice(0, 16)}`;
}

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
  private est: NetEstimator | undefined;
  private state: SourceState | undefined;
  private bandwidthCap: number | undefined;
  private downtimeLimitMs: number | undefined;
  /** Why abort() was called; the migration ends with it, whatever else failed meanwhile. */
  private abortError: PresyncError | undefined;
  private link: SourceLink | undefined;

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

  /**
   * Runs the migration through its phases (source-phases.ts): connect and
   * presync until launch, live rounds, pause, final copy, verify, device
   * state and commit, handover; any failure before the handover is confirmed
   * rolls back. Never throws: the outcome is in the result.
   */
  async run(): Promise<MigrationResult> {
    await initDigest();
    const r = this.openRun();
    try {
      await connectAndScan(r);
      await runPresync(r);
      await runLiveRounds(r);
      await pauseGuest(r);
      await finalCopy(r);
      await verify(r);
      await commitDeviceState(r);
      const resumedAt = await handover(r);
      return result(r, 'done', null, true, resumedAt);
    } catch (e) {
      return await rollback(r, this.abortError ?? toPresyncError(e));
    } finally {
      r.s.reader.close();
    }
  }

  /** The run's state, link, sender and the context the phases get. */
  private openRun(): SourceRun {
    const o = this.o;
    const reader = openSourceImage(o.imagePath, o.segments, o.pageSize ?? 4096);
    const est = new NetEstimator({
      initialBandwidthBytesPerSec: o.bandwidthBytesPerSec ?? 125_000_000,
      windowSamples: 10,
      minSampleMs: 5,
      capBytesPerSec: o.bandwidthBytesPerSec ?? Infinity,
    });
    this.est = est;
    if (this.bandwidthCap !== undefined) est.setCap(this.bandwidthCap);
    const s = new SourceState(reader, est);
    this.state = s;
    const stepTimeoutMs = o.stepTimeoutMs ?? 30_000;
    const link = new SourceLink(
      {
        transport: o.transport,
        to: o.to,
        secret: o.secret,
        imageId: o.imageId ?? defaultImageId(o.imagePath, (o.segments ?? []).slice(1).map((x) => x.path)),
        lineageId: this.lineageId,
        streams: Math.max(1, Math.min(16, Math.floor(o.streams ?? 1))),
        reconnectAttempts: o.reconnectAttempts ?? 8,
        stepTimeoutMs,
        now: () => this.now(),
        onConnected: (e) => this.emit({ event: 'connected', ...e }),
      },
      s,
    );
    this.link = link;
    if (this.abortError) link.abortNow(this.abortError);
    const sender = new PageSender(s, link, { codec: o.codec ?? 'none', pagesPerFrame: o.pagesPerFrame ?? 64 });
    return {
      o,
      s,
      link,
      sender,
      epochMs: o.epochMs ?? 100,
      stepTimeoutMs,
      scanMode: o.scan ?? 'auto',
      overlapScans: o.overlapScans ?? true,
      now: () => this.now(),
      emit: (e) => this.emit(e),
      toPhase: (p, reason) => this.toPhase(p, reason),
      phase: () => this.phases.phase,
      launchedAt: () => this.launchRequestedAt,
      stopRequested: () => this.stopRequested,
      downtimeLimitMs: () => this.downtimeLimitMs,
      untilLaunchOr: (ms) => this.untilLaunchOr(ms),
      updateStatus: (phase, rate, dirtyPages) => this.updateStatus(phase, rate, dirtyPages),
      progress: () => this.emit({ event: 'progress', status: this.status }),
    };
  }

  /** Waits `ms`, or less if launch is asked for meanwhile. */
  private async untilLaunchOr(ms: number): Promise<void> {
    if (!this.launched) {
      await new Promise<void>((r) => {
        const timer = setTimeout(r, ms);
        this.launchWaiter = () => {
          clearTimeout(timer);
          r();
        };
      });
    }
    this.launchWaiter = undefined;
  }

  private updateStatus(phase: Phase, rate: number, dirtyPages = 0): void {
    const s = this.state;
    if (!s) return;
    const st = s.stale.count();
    const bw = s.est.bandwidthBytesPerSec;
    this.status = {
      phase,
      elapsedMs: this.now(),
      pageCount: s.pageCount,
      inSyncPages: s.pageCount - st,
      inSyncPercent: Math.floor(((s.pageCount - st) / s.pageCount) * 1000) / 10,
      stalePages: st,
      rateBytesPerSec: rate,
      bandwidthBytesPerSec: bw,
      presyncBytes: s.acct.presyncBytes,
      finalBytes: s.acct.finalBytes,
      expectedDowntimeMs: s.ledger.expectedDowntimeMs(st, bw, s.est.rttMs),
      epoch: s.epoch,
      pageSize: s.pageSize,
      dirtyPages,
      initialCopyDone: s.initialLeft === 0,
    };
  }

  /** Abandons a migration that has not been launched. */
  stop(): void {
    this.stopRequested = true;
    this.launchWaiter?.();
  }

  /**
   * Rolls the migration back from whatever phase it is in (a signal, an
   * operator's abort): every wait ends, the guest is resumed, the target told
   * (ABORT) and run() returns `rolled-back` with PRESYNC_ERR_ABORTED. Once
   * HANDOVER has gone out nothing can be undone: run() returns `in-doubt` and
   * the guest stays paused. Idempotent; a no-op after run() has returned.
   */
  abort(reason: string): void {
    if (this.abortError) return;
    this.abortError = new PresyncError(ErrorCodes.ABORTED, reason);
    this.stop();
    this.link?.abortNow(this.abortError);
  }

  get aborted(): boolean {
    return this.abortError !== undefined;
  }
}
