/**
 * The engine's GuestController for a QEMU VM whose RAM is a shared
 * memory-backend-file. presync syncs the RAM file; QEMU's own stream, with
 * `x-ignore-shared`, carries only device state at the switchover:
 *
 *   pause()   migrate to the target QEMU and wait for `pre-switchover`
 *             (QEMU has stopped the vCPUs: the RAM file is frozen)
 *   commit()  migrate-continue, then wait until QEMU reports `completed`
 *             (with `return-path`, that means the target loaded the device
 *             state); a target that died makes this fail, so the engine
 *             rolls back before it ever sends HANDOVER
 *   release() quit the source QEMU (or leave it stopped in postmigrate)
 *   resume()  migrate_cancel + cont: the guest goes on here
 *
 * With non-shared disks (`copyStorage`), prepare() also starts a mirror of
 * each disk into the target's NBD exports (src/qemu/disk-mirror.ts); the
 * launch waits until every mirror is ready, pause() completes them once the
 * vCPUs are stopped (a named step, `disk-mirror-complete`, timed in the
 * figures), and resume() cancels whatever is still running.
 */
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { GuestController } from '../guest/controller.ts';
import { DiskMirror, digestDiskFileAsync, encodeDiskDigests, type DiskMirrorOptions } from './disk-mirror.ts';
import type { MigrationInfo } from './qmp-commands.ts';
import type { QmpClient, QmpEvent } from './qmp.ts';
import { completedFigures, continueSwitchover, rollbackSource, setCapabilities, startMigrate, waitMigrationCompleted, waitPreSwitchover } from './switchover.ts';

export interface QemuControllerOptions {
  /** The target QEMU's incoming migration address, e.g. tcp:10.0.0.2:7071. */
  readonly targetUri: string;
  /** After a successful migration: 'quit' the source QEMU (default) or leave it 'stopped'. */
  readonly afterRelease?: 'quit' | 'stopped';
  /** How long pause() may wait for pre-switchover, ms. Default 30 000. */
  readonly pauseTimeoutMs?: number;
  /** How long commit() may wait for QEMU's stream to complete, ms. Default 30 000. */
  readonly completeTimeoutMs?: number;
  /** How long the vCPUs typically run on after `migrate`, ms (see pauseLagMs). Default QEMU_PAUSE_LAG_MS. */
  readonly pauseLagMs?: number;
  /** Non-shared storage: mirror these disks into the target's NBD exports from prepare() on. */
  readonly copyStorage?: DiskMirrorOptions & {
    /** Hash each copied disk with the guest stopped and have the target compare before it runs (--verify-disk). */
    readonly verify?: boolean;
  };
}

/**
 * From `migrate` to the source's STOP event, QEMU sets up its stream and
 * runs one (empty, with x-ignore-shared) RAM iteration while the vCPUs run
 * on (figures.migrateToStopMs): measured 12-21 ms under TCG here on an idle
 * link, longer (25-50 ms) when pages sent just ahead of the pause fill the
 * link QEMU's own stream shares. The idle figure, taken a little short: the
 * pages that cross within it go out alongside `migrate` at no cost.
 */
export const QEMU_PAUSE_LAG_MS = 15;

/** QEMU's own view of the switchover, for reports. */
export interface QemuSwitchoverFigures {
  /** Host wall-clock ms (QMP timestamp) of the source's STOP event, when seen. */
  sourceStopAtMs: number | null;
  /** query-migrate at completion: QEMU's downtime (vCPUs stopped until the target loaded the device state, with return-path). */
  downtimeMs: number | null;
  totalTimeMs: number | null;
  setupTimeMs: number | null;
  /** Bytes QEMU's stream carried (device state and the small unshared RAM blocks). */
  transferredBytes: number | null;
  /** From migrate to pre-switchover as seen from the host, ms. */
  migrateToPreSwitchoverMs: number | null;
  /** From migrate to the source's STOP event (QMP timestamp against the host clock), ms: how long the guest ran on. */
  migrateToStopMs: number | null;
  /** From migrate-continue to `completed`, ms. */
  continueToCompletedMs: number | null;
  /** Non-shared disks: from the start of presync until every mirror was ready, ms. */
  diskReadyMs: number | null;
  /** Non-shared disks: completing the mirrors with the vCPUs stopped, ms (inside the pause). */
  diskCompleteMs: number | null;
  /** Non-shared disks: bytes the mirrors copied to the target (QEMU's job offsets). */
  diskBytes: number | null;
  /** --verify-disk: hashing the source's disks with the vCPUs stopped, ms (inside the pause; the target hashes its own too). */
  diskVerifyMs: number | null;
  /** --verify-disk: the target found its disks equal to the source's before it ran the guest (a mismatch rolls back). */
  diskVerified: boolean | null;
}

export function qmpTimestampMs(ev: QmpEvent): number {
  return ev.timestamp.seconds * 1000 + ev.timestamp.microseconds / 1000;
}

/** Capabilities both ends need; the target side is set by QemuTarget. */
export const SOURCE_CAPABILITIES = { 'x-ignore-shared': true, 'pause-before-switchover': true, 'return-path': true, events: true } as const;
/**
 * late-block-activate: the target takes its disks over only at `cont`, not
 * when the stream has loaded; presync's target waits (-S) until HANDOVER,
 * and a source that rolls back in between must be able to re-activate a
 * shared image (the target holding it active would keep its write lock).
 */
export const TARGET_CAPABILITIES = { 'x-ignore-shared': true, 'return-path': true, events: true, 'late-block-activate': true } as const;

export class QemuGuestController implements GuestController {
  readonly kind = 'qemu';
  readonly pauseLagMs: number;
  readonly figures: QemuSwitchoverFigures = {
    sourceStopAtMs: null,
    downtimeMs: null,
    totalTimeMs: null,
    setupTimeMs: null,
    transferredBytes: null,
    migrateToPreSwitchoverMs: null,
    migrateToStopMs: null,
    continueToCompletedMs: null,
    diskReadyMs: null,
    diskCompleteMs: null,
    diskBytes: null,
    diskVerifyMs: null,
    diskVerified: null,
  };
  /** The disk mirrors, once prepare() started them. */
  disks: DiskMirror | undefined;
  #diskDigests: Uint8Array = new Uint8Array(0);
  /** --verify-disk: the source's digests being taken (from the mirrors' completion until the device state goes). */
  #digesting: Promise<Uint8Array> | undefined;
  #stopOff: (() => void) | undefined;
  #completed: MigrationInfo | undefined;
  #prepared = false;

  constructor(readonly qmp: QmpClient, readonly o: QemuControllerOptions) {
    if (!/^(tcp|unix|exec|rdma):/.test(o.targetUri)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `target QEMU uri must look like tcp:HOST:PORT, got "${o.targetUri}"`);
    }
    this.pauseLagMs = o.pauseLagMs ?? QEMU_PAUSE_LAG_MS;
    this.deviceState = o.copyStorage?.verify === true ? () => this.#digesting ?? Promise.resolve(this.#diskDigests) : undefined;
  }

  /**
   * Sets the source's migration capabilities and checks the VM runs. Call
   * before the migration starts so a QEMU lacking a capability fails early,
   * while nothing has been sent.
   */
  async prepare(): Promise<void> {
    const st = await this.qmp.execute('query-status');
    if (!st.running) throw new PresyncError(ErrorCodes.GUEST, `the source VM is not running (status ${st.status}); presync migrates running guests`);
    const info = await this.qmp.execute('query-migrate');
    if (info.status === 'active' || info.status === 'setup' || info.status === 'pre-switchover' || info.status === 'device') {
      throw new PresyncError(ErrorCodes.BUSY, `the source VM is already migrating (status ${info.status})`);
    }
    await setCapabilities(this.qmp, SOURCE_CAPABILITIES);
    if (this.o.copyStorage && !this.disks) this.disks = await DiskMirror.start(this.qmp, this.o.copyStorage);
    this.#prepared = true;
  }

  /** Why the switchover cannot start yet (a disk mirror not ready), or null. */
  launchBlocker(): string | null {
    const d = this.disks;
    if (!d || d.ready) return null;
    return `waiting for the disk mirrors to be ready (${d.jobs.map((j) => `${j.jobId} ${j.len > 0 ? Math.floor((100 * j.offset) / j.len) : 0}%`).join(', ')})`;
  }

  /** A failure that must end the migration (a disk mirror failed), or null. */
  failure(): PresyncError | null {
    return this.disks?.failure ?? null;
  }

  /** --verify-disk: the source's disk digests, taken in pause(); sent to the target with the device state. */
  readonly deviceState: (() => Promise<Uint8Array>) | undefined;

  async pause(): Promise<void> {
    if (!this.#prepared) await this.prepare();
    this.#stopOff?.();
    this.#stopOff = this.qmp.onEvent((ev) => {
      if (ev.event === 'STOP' && this.figures.sourceStopAtMs === null) this.figures.sourceStopAtMs = qmpTimestampMs(ev);
    });
    const t0 = performance.now();
    const wall0 = Date.now();
    await startMigrate(this.qmp, this.o.targetUri);
    await waitPreSwitchover(this.qmp, this.o.pauseTimeoutMs ?? 30_000);
    this.figures.migrateToPreSwitchoverMs = performance.now() - t0;
    if (this.figures.sourceStopAtMs !== null) this.figures.migrateToStopMs = Math.round((this.figures.sourceStopAtMs - wall0) * 10) / 10;
    const st = await this.qmp.execute('query-status');
    // pre-switchover is only reached with the vCPUs stopped; anything else means the RAM may still change.
    if (st.running) throw new PresyncError(ErrorCodes.QEMU, 'QEMU reports pre-switchover but the source vCPUs still run');
    if (this.disks) await this.#completeDisks(this.disks);
  }

  /** Step `disk-mirror-complete`: with the vCPUs stopped, end each mirror without pivot; then, if asked, hash the disks. */
  async #completeDisks(d: DiskMirror): Promise<void> {
    this.figures.diskReadyMs = d.figures.readyMs;
    await d.complete(this.o.completeTimeoutMs ?? 30_000);
    this.figures.diskCompleteMs = d.figures.completeMs;
    this.figures.diskBytes = d.figures.bytes;
    if (this.o.copyStorage?.verify !== true) return;
    // The vCPUs stay stopped until commit(): the disks hash while presync's final copy and verify go on.
    const t0 = performance.now();
    this.#digesting = Promise.all(d.plans.map((p) => digestDiskFileAsync(p.disk.key, p.disk.file))).then((digests) => {
      this.figures.diskVerifyMs = Math.round((performance.now() - t0) * 10) / 10;
      return (this.#diskDigests = encodeDiskDigests(digests));
    });
    this.#digesting.catch(() => undefined);
  }

  async resume(): Promise<void> {
    this.#stopOff?.();
    this.#stopOff = undefined;
    this.figures.sourceStopAtMs = null;
    // After commit() QEMU's stream has completed, but presync's target QEMU
    // runs with -S and starts the guest only at HANDOVER, which the engine
    // has not sent when it rolls back: the guest is safe to resume here.
    // A hash still reading the disk only reads: its digest is dropped.
    this.#digesting = undefined;
    await rollbackSource(this.qmp, 30_000, { targetHeldPaused: this.#completed !== undefined });
    this.#completed = undefined;
    // The guest runs again on its own disk (it never pivoted); a mirror still running is stopped.
    await this.disks?.cancel();
  }

  async commit(): Promise<void> {
    const t0 = performance.now();
    await continueSwitchover(this.qmp);
    const info = await waitMigrationCompleted(this.qmp, this.o.completeTimeoutMs ?? 30_000);
    this.figures.continueToCompletedMs = performance.now() - t0;
    this.#completed = info;
    this.#takeFigures(info);
  }

  #takeFigures(info: MigrationInfo): void {
    this.figures.downtimeMs = info.downtimeMs ?? null;
    this.figures.totalTimeMs = info.totalTimeMs ?? null;
    this.figures.setupTimeMs = info.setupTimeMs ?? null;
    this.figures.transferredBytes = info.ram?.transferred ?? null;
  }

  async release(): Promise<void> {
    this.#stopOff?.();
    this.#stopOff = undefined;
    if (!this.#completed) throw new PresyncError(ErrorCodes.BAD_PHASE, 'release() before the QEMU migration completed');
    // The target compares the digests before it runs the guest and refuses on a mismatch: a confirmed handover means they matched.
    if (this.#diskDigests.length > 0) this.figures.diskVerified = true;
    this.disks?.dispose();
    // QEMU fills in its times just after reporting completed; asked again
    // here, after the handover, so that the pause never waits for them.
    if (!((this.#completed.totalTimeMs ?? 0) > 0)) this.#takeFigures(await completedFigures(this.qmp, this.#completed).catch(() => this.#completed!));
    if ((this.o.afterRelease ?? 'quit') === 'quit') await this.qmp.quit(10_000);
  }

  isAlive(): boolean {
    return !this.qmp.isClosed;
  }
}
