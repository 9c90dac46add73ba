/**
 * The source agent as a library: `migrate(options)` starts one migration and
 * returns a handle that emits the events the CLI prints (`presync migrate
 * --json` writes exactly these, one per line) and takes the operator's
 * commands: launch, launch when ready, abort, set bandwidth or downtime limit.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { createPolicy } from '../core/policies/registry.ts';
import type { MigrationPolicy } from '../core/types.ts';
import { ControlServer } from '../engine/control.ts';
import { SourceLock } from '../engine/source-lock.ts';
import { SourceMigration, type MigrationResult, type SourceEvent, type SourceStatus } from '../engine/source-session.ts';
import { ImageOnlyController, ProcessController, type GuestController } from '../guest/controller.ts';
import { openSourceImage, type SourceSegment } from '../guest/segmented-reader.ts';
import { MigrationProgressTracker, progressEvent, type MigrationProgress, type ProgressEvent } from '../engine/progress-tracker.ts';

export type { ProgressEvent } from '../engine/progress-tracker.ts';
import { parseAddress } from '../transport/address.ts';
import { RateLimit, RateLimitedTransport } from '../transport/rate-limit.ts';
import type { Transport, TransportAddress } from '../transport/types.ts';
import { EventStream } from './event-stream.ts';
import { AgentMetrics, serveMetrics, type MetricsEndpoint } from './metrics.ts';
import { makeTransport, toBytesPerSec, toMs, toSecret, type Duration, type Rate, type TlsOptions } from './options.ts';

export type { MigrationResult, SourceStatus } from '../engine/source-session.ts';

export interface MigrateOptions {
  /** The guest's RAM image (a file of pages; for QEMU a memory-backend-file). */
  readonly image: string;
  /**
   * The guest's RAM when it is several files (e.g. one QEMU memory-backend-file
   * per NUMA node), in page order, the first being `image`: synced as one
   * image. The lock is taken on `image`, one per migration.
   */
  readonly segments?: readonly SourceSegment[];
  /** The target agent, `host:port` or an address. */
  readonly to: string | TransportAddress;
  /** The secret both agents share (at least 16 bytes). */
  readonly secret: Uint8Array | string;
  /** The guest process: paused (SIGSTOP) at the switchover, killed after the handover, resumed on rollback. Without it only the image moves. */
  readonly pid?: number;
  /** Policy name (default `presync`). */
  readonly policy?: string;
  /** Send-rate limit, changeable later with `set()`. */
  readonly bandwidth?: Rate;
  /** Pause no longer than this at the switchover (default 300 ms); also the threshold of `launchWhenReady()`. */
  readonly downtimeLimit?: Duration;
  /** Launch this long after the start (else call `launch()`). */
  readonly launchAfter?: Duration;
  /** Launch as soon as the initial copy is done and the expected pause fits the downtime limit. */
  readonly launchWhenReady?: boolean;
  /** Presync epoch (default 100 ms). */
  readonly epoch?: Duration;
  readonly codec?: 'none' | 'deflate' | 'lz4';
  readonly streams?: number;
  readonly scan?: 'auto' | 'full' | 'incremental';
  readonly pageSize?: number;
  readonly imageId?: string;
  readonly tls?: TlsOptions;
  /** A unix socket that takes `presync launch|status|abort|set --control PATH`. */
  readonly control?: string;
  /** Serve Prometheus metrics on `host:port` (port 0: any free port; see the `metrics` event). */
  readonly metrics?: string;
  /** Keep serving metrics this long after the end, so a last scrape sees the outcome (default 0). */
  readonly metricsLinger?: Duration;
  /** A transport to use instead of TCP/TLS (tests, in-memory links). */
  readonly transport?: Transport;
  /** A guest controller to use instead of the one `pid` implies. */
  readonly controller?: GuestController;
  /** This migration's lineage, kept in the source lock (random 16-byte hex by default). */
  readonly lineageId?: string;
}

/** What `status()` and the control socket's `status` return: the figures operators know from `virsh domjobinfo`. */
export interface OperatorStatus {
  readonly phase: string;
  readonly elapsedMs: number;
  readonly bytesSent: number;
  readonly bytesRemaining: number;
  readonly dirtyRateBytesPerSec: number;
  readonly transferRateBytesPerSec: number;
  readonly expectedDowntimeMs: number;
  /** Highest share of pages in sync so far, %. */
  readonly inSyncPercent: number;
  readonly stalePages: number;
  readonly pageCount: number;
  readonly initialCopyDone: boolean;
  readonly ready: boolean;
  readonly launched: boolean;
  readonly launchWhenReady: boolean;
  /** Time until the planned launch; null when none is planned. */
  readonly launchInMs: number | null;
  readonly bandwidthLimitBytesPerSec: number | null;
  readonly downtimeLimitMs: number;
}

export type MigrationEvent =
  | Exclude<SourceEvent, { event: 'progress' }>
  | ProgressEvent
  | { event: 'metrics'; host: string; port: number }
  | { event: 'control'; cmd: string; [k: string]: unknown }
  | ({ event: 'result' } & ResultSummary);

/** The result without its time series: what `--json` prints as the last line. */
export interface ResultSummary {
  readonly outcome: MigrationResult['outcome'];
  readonly error: MigrationResult['error'];
  readonly launchToRunningMs: number | null;
  readonly downtimeMs: number | null;
  readonly presyncBytes: number;
  readonly finalBytes: number;
  readonly residualPagesAtLaunch: number;
  readonly resentPages: number;
  readonly verified: boolean;
  readonly wastedPages: number;
  readonly converged: boolean;
  readonly liveRounds: number;
}

const round1 = (n: number | null): number | null => (n === null ? null : Math.round(n * 10) / 10);

export function resultSummary(r: MigrationResult): ResultSummary {
  return {
    outcome: r.outcome,
    error: r.error,
    launchToRunningMs: round1(r.launchToRunningMs),
    downtimeMs: round1(r.downtimeMs),
    presyncBytes: r.presyncBytes,
    finalBytes: r.finalBytes,
    residualPagesAtLaunch: r.residualPagesAtLaunch,
    resentPages: r.resentPages,
    verified: r.verified,
    wastedPages: r.wastedPages,
    converged: r.converged,
    liveRounds: r.liveRounds,
  };
}

export interface MigrationSettings {
  /** A rate, or null to lift the limit. */
  readonly bandwidth?: Rate | null;
  readonly downtimeLimit?: Duration;
}

/** One running migration. Await `result`; iterate it or listen to it for events. */
export class Migration extends EventStream<MigrationEvent> {
  /** Settles when the migration has ended and everything it opened is closed; rejects on bad options. */
  readonly result: Promise<MigrationResult>;
  /** The policy in use (known once started). */
  policy: MigrationPolicy | undefined;
  private sm: SourceMigration | undefined;
  private readonly tracker: MigrationProgressTracker;
  private readonly limit: RateLimit;
  private downtimeLimitMs: number;
  private whenReady: boolean;
  private launchAtMs: number | null = null;
  private launchRequested = false;
  private abortReason: string | undefined;
  private lastProgress: MigrationProgress | undefined;
  private readonly metrics: AgentMetrics | undefined;
  private lock: SourceLock | undefined;
  private guarded: GuestController | undefined;
  private control: ControlServer | undefined;

  constructor(private readonly o: MigrateOptions) {
    super();
    this.downtimeLimitMs = o.downtimeLimit !== undefined ? toMs(o.downtimeLimit, 'downtimeLimit') : 300;
    this.tracker = new MigrationProgressTracker({ readyDowntimeMs: this.downtimeLimitMs });
    this.limit = new RateLimit(o.bandwidth !== undefined ? toBytesPerSec(o.bandwidth, 'bandwidth') : null);
    this.whenReady = o.launchWhenReady === true;
    this.metrics = o.metrics !== undefined ? new AgentMetrics() : undefined;
    this.result = this.run();
    // The caller may only listen to events; an unawaited rejection must not crash the process.
    this.result.catch(() => undefined);
  }

  /** Say "go". Idempotent. */
  launch(): void {
    this.launchRequested = true;
    this.sm?.launch();
  }

  /** Launch as soon as the initial copy is done and the expected pause fits the downtime limit. */
  launchWhenReady(): void {
    this.whenReady = true;
    if (this.lastProgress?.ready === true) this.launch();
  }

  /** Roll back: the guest keeps running on the source, the target discards what it received. */
  abort(reason = 'aborted by the operator'): void {
    this.abortReason ??= reason;
    this.sm?.abort(reason);
  }

  /** True once the last step towards HANDOVER began (the lock says committed): from then on nothing may resume the guest. */
  get handoverBegan(): boolean {
    return this.lock?.current === 'committed';
  }

  /**
   * Last resort when the engine does not finish a rollback (a second signal):
   * resumes the guest and drops the lock and the control socket without it.
   * Refused once the handover began.
   */
  async resumeGuestNow(): Promise<void> {
    if (this.handoverBegan) return;
    await this.guarded?.resume();
    this.lock?.release();
    await this.control?.close();
  }

  /** Changes the bandwidth limit and/or the downtime limit while the migration runs. */
  set(s: MigrationSettings): OperatorStatus {
    if (s.bandwidth !== undefined) {
      const b = s.bandwidth === null ? null : toBytesPerSec(s.bandwidth, 'bandwidth');
      this.limit.set(b);
      this.sm?.setBandwidthCap(b);
    }
    if (s.downtimeLimit !== undefined) {
      this.downtimeLimitMs = toMs(s.downtimeLimit, 'downtimeLimit');
      this.tracker.setReadyDowntimeMs(this.downtimeLimitMs);
      this.sm?.setDowntimeLimit(this.downtimeLimitMs);
    }
    return this.status();
  }

  /** The last progress view (smoothed rates, readiness, countdown); undefined before the first. */
  get progress(): MigrationProgress | undefined {
    return this.lastProgress;
  }

  status(): OperatorStatus {
    const s = this.sm?.currentStatus();
    const p = this.lastProgress;
    return {
      phase: s?.phase ?? 'idle',
      elapsedMs: Math.round(s?.elapsedMs ?? 0),
      bytesSent: s ? s.presyncBytes + s.finalBytes : 0,
      bytesRemaining: s ? s.stalePages * s.pageSize : 0,
      dirtyRateBytesPerSec: Math.round(p?.dirtyRateBytesPerSec ?? 0),
      transferRateBytesPerSec: Math.round(p?.rateBytesPerSec ?? 0),
      expectedDowntimeMs: Math.round((s?.expectedDowntimeMs ?? 0) * 10) / 10,
      inSyncPercent: p?.inSyncPercent ?? 0,
      stalePages: s?.stalePages ?? 0,
      pageCount: s?.pageCount ?? 0,
      initialCopyDone: s?.initialCopyDone ?? false,
      ready: (p?.ready ?? false) && (this.guarded?.launchBlocker?.() ?? null) === null,
      launched: this.launchRequested,
      launchWhenReady: this.whenReady,
      launchInMs: this.launchAtMs === null || s === undefined ? null : Math.max(0, Math.round(this.launchAtMs - s.elapsedMs)),
      bandwidthLimitBytesPerSec: this.limit.bytesPerSec,
      downtimeLimitMs: this.downtimeLimitMs,
    };
  }

  private onEngineEvent(e: SourceEvent): void {
    if (e.event === 'progress') {
      const p = this.tracker.update(e.status, this.launchAtMs);
      this.lastProgress = p;
      this.metrics?.onProgress(p);
      this.publish(progressEvent(e.status, p));
      // Ready means the guest's other state is ready too (a QEMU disk mirror in sync).
      if (this.whenReady && p.ready && e.status.phase === 'presync' && (this.guarded?.launchBlocker?.() ?? null) === null) this.launch();
      return;
    }
    if (e.event === 'phase' && this.metrics) {
      this.metrics.onPhase(e.phase);
      // The figures after launch move without progress events: take them at each phase.
      if (this.sm && e.phase !== 'presync') this.metrics.onProgress(this.tracker.update(this.sm.currentStatus(), this.launchAtMs));
    }
    if (e.event === 'connected' && e.attempt > 0) this.metrics?.onReconnect();
    this.publish(e);
  }

  private async run(): Promise<MigrationResult> {
    const o = this.o;
    let control: ControlServer | undefined;
    let endpoint: MetricsEndpoint | undefined;
    let lock: SourceLock | undefined;
    let timer: NodeJS.Timeout | undefined;
    let r: MigrationResult | undefined;
    try {
      const to = typeof o.to === 'string' ? parseAddress(o.to) : o.to;
      const secret = toSecret(o.secret);
      const pageSize = o.pageSize ?? 4096;
      const epochMs = o.epoch !== undefined ? toMs(o.epoch, 'epoch') : 100;
      const launchAfter = o.launchAfter !== undefined ? toMs(o.launchAfter, 'launchAfter') : undefined;
      const transport = new RateLimitedTransport(o.transport ?? makeTransport(o.tls), this.limit);
      // Geometry comes from the image itself; open once to validate before connecting.
      const probe = openSourceImage(o.image, o.segments, pageSize);
      const geometry = probe.geometry;
      probe.close();
      const policy = createPolicy(o.policy ?? 'presync', { geometry, seed: 1 }, { downtimeLimitMs: this.downtimeLimitMs });
      this.policy = policy;
      const inner = o.controller ?? (o.pid !== undefined ? new ProcessController(o.pid) : new ImageOnlyController());
      if (this.metrics && o.metrics !== undefined) {
        endpoint = await serveMetrics(o.metrics, this.metrics);
        this.publish({ event: 'metrics', host: endpoint.host, port: endpoint.port });
      }
      // One migration per guest; a lock left by a dead agent is recovered (its paused guest resumed) first.
      lock = SourceLock.acquire(o.image, { ...(o.pid !== undefined ? { guestPid: o.pid } : {}), lineageId: o.lineageId ?? randomBytes(16).toString('hex') });
      this.lock = lock;
      const sm = new SourceMigration({
        transport,
        to,
        secret,
        imagePath: o.image,
        ...(o.segments !== undefined ? { segments: o.segments } : {}),
        pageSize,
        ...(o.imageId !== undefined ? { imageId: o.imageId } : {}),
        policy,
        controller: (this.guarded = lock.guard(inner)),
        // One lineage for the lock and the target: the same id names this migration's copy at both ends.
        lineageId: lock.lineageId,
        epochMs,
        codec: o.codec ?? 'none',
        streams: o.streams ?? 1,
        ...(o.scan !== undefined ? { scan: o.scan } : {}),
        ...(this.limit.bytesPerSec !== null ? { bandwidthBytesPerSec: this.limit.bytesPerSec } : {}),
        onEvent: (e) => this.onEngineEvent(e),
      });
      this.sm = sm;
      sm.setDowntimeLimit(this.downtimeLimitMs);
      if (this.abortReason !== undefined) this.abort(this.abortReason);
      if (this.launchRequested) sm.launch();
      if (o.control !== undefined) control = this.control = await ControlServer.listen(o.control, controlHandlers(this));
      if (launchAfter !== undefined) {
        this.launchAtMs = sm.currentStatus().elapsedMs + launchAfter;
        timer = setTimeout(() => this.launch(), launchAfter);
      }
      r = await sm.run();
      return r;
    } finally {
      if (timer) clearTimeout(timer);
      await control?.close();
      // In doubt, the lock stays (state committed) so no later agent resumes a guest the target may run.
      lock?.release({ keepIfCommitted: r === undefined || r.outcome === 'in-doubt' });
      if (r) {
        this.metrics?.onEnd(r.outcome, r.downtimeMs);
        this.publish({ event: 'result', ...resultSummary(r) });
      }
      if (endpoint && r && o.metricsLinger !== undefined) await new Promise((res) => setTimeout(res, toMs(o.metricsLinger!, 'metricsLinger')));
      await endpoint?.close();
      this.endEvents();
    }
  }
}

/** The control socket's commands, on a migration. */
export function controlHandlers(m: Migration): Parameters<typeof ControlServer.listen>[1] {
  return {
    launch: () => {
      m.launch();
      return { ...m.status() };
    },
    status: () => ({ ...m.status() }),
    abort: (reason?: string) => {
      m.abort(reason ?? 'aborted by the operator (presync abort)');
      return { aborting: true, ...m.status() };
    },
    launchWhenReady: () => {
      m.launchWhenReady();
      return { ...m.status() };
    },
    set: (s: { bandwidth?: string | null; downtimeLimit?: string }) => ({ ...m.set(s) }),
  };
}

/** Starts a migration. Errors in the options reject `result` with a PresyncError (PRESYNC_ERR_BAD_ARGUMENT). */
export function migrate(options: MigrateOptions): Migration {
  if (typeof options !== 'object' || options === null) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'migrate(options): options are required');
  return new Migration(options);
}
