/**
 * The target side of a QEMU migration with presync: a QEMU started with
 * `-incoming defer` whose RAM file is the target agent's image, listening
 * for QEMU's own (device-state-only) stream, and the handover hook that
 * confirms the handover once that QEMU runs the guest.
 *
 * presync writes the RAM file in place while this QEMU has it mapped (its
 * vCPUs never run before the switchover, so nothing else writes it). After a
 * failed attempt the QEMU is killed and started again, so every attempt
 * starts from a QEMU that has loaded nothing.
 *
 * Or the QEMU is someone else's (`attach`): a launcher started it with
 * `-incoming defer`; presync checks it over QMP, sets it up and drives it,
 * but never kills it. After a failed attempt that reached it, it is no
 * longer clean and only its launcher may replace it: `afterFailedAttempt`
 * says so and the agent stops.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ErrorCodes, PresyncError, toPresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import type { HandoverHook } from '../engine/target-session.ts';
import { metaPath, type ImageMeta } from '../guest/target-image.ts';
import { writeFileAtomic } from '../guest/atomic-file.ts';
import { qmpTimestampMs, TARGET_CAPABILITIES } from './qemu-controller.ts';
import { QmpClient, type QmpEvent } from './qmp.ts';
import { setCapabilities, startIncomingGuest } from './switchover.ts';
import { compareDiskDigests, decodeDiskDigests, digestDiskFileAsync, startNbdExports, stopNbdExports, type DiskDigest, type NbdAddress, type VmDisk } from './disk-mirror.ts';
import { describeVm, launchVm, type LaunchOptions, type Vm, type VmDescription } from './vm.ts';
import { sleep } from '../transport/deadline.ts';

export interface QemuTargetOptions {
  /** Machine to start; its RAM must be a file backend whose mem-path is the agent's image. */
  readonly launch?: LaunchOptions;
  /** Or a QEMU someone else started with `-incoming defer`: presync attaches to it (exactly one of launch, attach). */
  readonly attach?: AttachTarget;
  /** Where QEMU listens for the source QEMU's stream, e.g. tcp:0.0.0.0:7071. */
  readonly listenUri: string;
  /** How long the hook waits for the target to run after HANDOVER, ms. Default 30 000. */
  readonly runTimeoutMs?: number;
  /** Non-shared storage: serve the target's writable disks over NBD here while waiting, for the source's mirrors. */
  readonly nbd?: { readonly listen: NbdAddress; readonly disks?: readonly string[] | 'all' };
  readonly onEvent?: (e: QemuTargetEvent) => void;
}

export interface AttachTarget {
  /** A QMP socket of that QEMU no one else is connected to. */
  readonly qmpSocket: string;
  /** The agent's image: the QEMU's RAM backend mem-path must be this file. */
  readonly image: string;
  /** If given, the QEMU's machine type must be this one. */
  readonly machine?: string;
  readonly connectTimeoutMs?: number;
  /** Called once the QEMU passed the checks, before presync changes anything in it; throwing leaves it untouched. */
  readonly onChecked?: (d: VmDescription) => void;
}

/** Why an attached QEMU can take no more attempts (its launcher must replace it). */
export interface Spoiled {
  /** `attempt-failed`: a failed attempt reached it; `gone`: its QMP connection closed; `in-doubt`: it may run the guest. */
  readonly reason: 'attempt-failed' | 'gone' | 'in-doubt';
  readonly error: PresyncError;
}

export type QemuTargetEvent =
  | { event: 'qemu-ready'; pid: number | null; uri: string; attempt: number; nbd: string | null; disks: string[] }
  | { event: 'disk-verified'; disks: string[]; ms: number }
  | { event: 'qemu-exited'; pid: number | null; code: number | null; signal: string | null; expected: boolean }
  | { event: 'qemu-running'; pid: number; resumedAtMs: number | null }
  | { event: 'qemu-error'; error: { code: string; message: string } };

/**
 * Writes the agent's image sidecar so the handshake refuses a source whose
 * RAM size differs from this QEMU's (it would otherwise resize a mapped file).
 * A sidecar that already describes this geometry is kept: it lets a source
 * that lost its connection resume.
 */
export function claimImageGeometry(imagePath: string, geometry: Geometry, opts: { force?: boolean } = {}): void {
  const p = metaPath(imagePath);
  if (existsSync(p)) {
    let m: Partial<ImageMeta> | undefined;
    try {
      m = JSON.parse(readFileSync(p, 'utf8')) as Partial<ImageMeta>;
    } catch {
      /* rewritten below */
    }
    if (m?.format === 'presync-image/1' && m.state === 'valid' && !opts.force) {
      // A guest handed over into this file may run from it now: a new target QEMU mapping it would overwrite its memory.
      throw new PresyncError(
        ErrorCodes.IMAGE_EXISTS,
        `${imagePath} was handed over to a VM (state valid) that may still run from it; use another --image, or stop that VM and pass --force`,
      );
    }
    if (m?.format === 'presync-image/1' && m.pageSize === geometry.pageSize && m.pageCount === geometry.pageCount) return;
  }
  const meta: ImageMeta = { format: 'presync-image/1', imageId: 'qemu-target-empty', pageSize: geometry.pageSize, pageCount: geometry.pageCount, state: 'invalid' };
  writeFileAtomic(p, JSON.stringify(meta) + '\n');
}

export class QemuTarget {
  #vm: Vm | undefined;
  /** The attached QEMU's QMP connection (attach mode). */
  #attached: QmpClient | undefined;
  #uri = '';
  #attempt = 0;
  #handedOver = false;
  #closing = false;
  #restarting: Promise<void> | undefined;
  #resumedAtMs: number | null = null;
  #exported: VmDisk[] = [];
  /** The exported disks' digests, taken from the verify phase on (prehashDisks). */
  #prehash: { at: number; digests: Promise<DiskDigest[]> } | undefined;
  /** This QEMU's NBD server has been stopped (once per QEMU: a second nbd-server-stop is an error). */
  #nbdStop: Promise<void> | undefined;
  /** Attach mode: why the attached QEMU can take no more attempts. */
  #spoiled: Spoiled | undefined;

  private constructor(readonly o: QemuTargetOptions) {}

  /** Starts (or attaches to) the target QEMU and makes it listen; resolves once a source QEMU can connect. */
  static async start(o: QemuTargetOptions): Promise<QemuTarget> {
    if ((o.launch === undefined) === (o.attach === undefined)) throw new PresyncError(ErrorCodes.INTERNAL, 'QemuTarget needs exactly one of launch and attach');
    if (o.launch && o.launch.ram.kind !== 'file') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'the target QEMU needs a file RAM backend (the agent image)');
    if (!/^tcp:.+:\d+$/.test(o.listenUri)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--qemu-listen must be HOST:PORT, got ${o.listenUri}`);
    const t = new QemuTarget(o);
    if (o.attach) await t.#attach(o.attach);
    else await t.#boot();
    return t;
  }

  /** The QEMU presync started (undefined in attach mode). */
  get vm(): Vm | undefined {
    return this.#vm;
  }

  /** presync started this QEMU (and may stop it); false for an attached one. */
  get owned(): boolean {
    return this.o.attach === undefined;
  }

  /** The QMP connection to the target QEMU, whichever mode. */
  get qmp(): QmpClient | undefined {
    return this.#vm?.qmp ?? this.#attached;
  }

  /** The QEMU's pid, when presync started it. */
  get pid(): number | null {
    return this.#vm?.pid ?? null;
  }

  /** The uri the source's QEMU must migrate to (the listen address with the port QEMU got). */
  get uri(): string {
    return this.#uri;
  }

  get handedOver(): boolean {
    return this.#handedOver;
  }

  get imagePath(): string {
    if (this.o.attach) return this.o.attach.image;
    return this.o.launch?.ram.kind === 'file' ? this.o.launch.ram.memPath : '';
  }

  /** Host wall-clock ms (QMP timestamp) of the target's RESUME, once it ran. */
  get resumedAtMs(): number | null {
    return this.#resumedAtMs;
  }

  async #boot(): Promise<void> {
    this.#attempt++;
    // -S: QEMU must not start the guest when its incoming stream completes
    // (the source commits the device state before HANDOVER); only the hook,
    // called at HANDOVER after the image verified, lets it run.
    const vm = await launchVm({ ...this.o.launch!, incoming: 'defer', startPaused: true });
    try {
      this.#uri = await listenIncoming(vm.qmp, this.o.listenUri);
      await this.#exportDisks(vm.qmp);
    } catch (e) {
      await vm.dispose().catch(() => undefined);
      throw e;
    }
    this.#vm = vm;
    this.#watchResume(vm.qmp);
    this.o.onEvent?.({ event: 'qemu-ready', pid: vm.pid, uri: this.#uri, attempt: this.#attempt, ...this.#nbdInfo() });
    void vm.exited.then((ex) => {
      const expected = this.#closing || this.#vm !== vm;
      this.o.onEvent?.({ event: 'qemu-exited', pid: vm.pid, code: ex.code, signal: ex.signal, expected });
      // A target QEMU that died while waiting is replaced, so the next source finds one.
      if (!expected && !this.#handedOver) void this.restart().catch(() => undefined);
    });
  }

  async #attach(a: AttachTarget): Promise<void> {
    this.#attempt++;
    const qmp = await QmpClient.connect(a.qmpSocket, { connectTimeoutMs: a.connectTimeoutMs ?? 5000 });
    try {
      a.onChecked?.(await checkAttachedTarget(qmp, a));
      // In status inmigrate, `stop` means what -S means: QEMU will not start
      // the guest on its own when the incoming stream completes (the source
      // commits the device state before HANDOVER). Only the hook runs it.
      await qmp.execute('stop');
      this.#uri = await listenIncoming(qmp, this.o.listenUri);
      await this.#exportDisks(qmp);
    } catch (e) {
      qmp.close();
      throw e;
    }
    this.#attached = qmp;
    this.#watchResume(qmp);
    this.o.onEvent?.({ event: 'qemu-ready', pid: null, uri: this.#uri, attempt: this.#attempt, ...this.#nbdInfo() });
    void qmp.closed.then((reason) => {
      const expected = this.#closing || this.#handedOver;
      if (!expected) this.#spoiled ??= { reason: 'gone', error: new PresyncError(ErrorCodes.QEMU, `the attached target QEMU went away (${reason.message}); its launcher must start a new one`) };
      this.o.onEvent?.({ event: 'qemu-exited', pid: null, code: null, signal: null, expected });
    });
  }

  /** --nbd-listen: the waiting QEMU serves its writable disks over NBD for the source's mirrors. */
  async #exportDisks(qmp: QmpClient): Promise<void> {
    this.#prehash = undefined;
    this.#nbdStop = undefined;
    if (this.o.nbd) this.#exported = await startNbdExports(qmp, this.o.nbd.listen, this.o.nbd.disks ?? 'all');
  }

  /**
   * Starts hashing the exported disks for --verify-disk ahead of HANDOVER.
   * Call once the source's mirrors have completed: presync's verify phase
   * begins after the source's pause, and the pause completes the mirrors
   * (every NBD write acknowledged) before it ends. Overlaps the hashing with
   * the RAM verify and QEMU's device state instead of adding it at `cont`.
   * The NBD server stops first, so nothing writes the disks after they are
   * hashed (this QEMU is paused until `cont`).
   */
  prehashDisks(): void {
    const qmp = this.qmp;
    if (!this.o.nbd || this.#exported.length === 0 || this.#prehash || !qmp) return;
    const digests = this.#stopNbd(qmp).then(() => Promise.all(this.#exported.map((d) => digestDiskFileAsync(d.key, d.file))));
    digests.catch(() => undefined);
    this.#prehash = { at: performance.now(), digests };
  }

  #nbdInfo(): { nbd: string | null; disks: string[] } {
    return { nbd: this.o.nbd ? `${this.o.nbd.listen.host}:${this.o.nbd.listen.port}` : null, disks: this.#exported.map((d) => d.key) };
  }

  #watchResume(qmp: QmpClient): void {
    this.#resumedAtMs = null;
    qmp.onEvent((ev: QmpEvent) => {
      if (ev.event === 'RESUME' && this.#resumedAtMs === null) this.#resumedAtMs = qmpTimestampMs(ev);
    });
  }

  /**
   * Attach mode: set once the attached QEMU can take no more attempts (a
   * failed one reached it, or it went away). Its launcher must replace it.
   */
  get spoiled(): Spoiled | undefined {
    return this.#spoiled;
  }

  /**
   * After a failed session: a QEMU whose incoming stream has started is no
   * longer clean. One presync started is restarted; an attached one is left
   * as it is (its launcher owns it) and marked spoiled. A QEMU still
   * waiting untouched (the source lost presync's connection during
   * presync and may resume) is kept.
   */
  async afterFailedAttempt(): Promise<'clean' | 'restarted' | 'spoiled'> {
    if (this.#handedOver) return 'clean';
    const qmp = this.qmp;
    if (this.#spoiled) return 'spoiled';
    if (!qmp || qmp.isClosed) {
      if (this.owned) return 'restarted'; // the exit watcher restarts it
      return 'spoiled';
    }
    let status: string | undefined = 'unreachable';
    try {
      status = (await qmp.execute('query-migrate')).status;
      if (status === undefined || status === 'none' || status === 'setup') return 'clean';
    } catch {
      /* unreachable QMP: not clean */
    }
    if (this.owned) {
      await this.restart().catch(() => undefined);
      return 'restarted';
    }
    this.#spoiled ??= {
      reason: 'attempt-failed',
      error: new PresyncError(
        ErrorCodes.QEMU,
        `a failed attempt reached the attached target QEMU (incoming migration ${status}); it is no longer clean and presync does not stop a QEMU it did not start: its launcher must replace it (a new QEMU with -incoming defer) and start presync qemu serve --attach-qmp again`,
      ),
    };
    return 'spoiled';
  }

  /**
   * Kills the waiting QEMU and starts a fresh one: after a failed attempt
   * its incoming side may have consumed part of a stream. Never touches a
   * QEMU that already runs the migrated guest, nor one presync did not start.
   */
  restart(): Promise<void> {
    if (this.#handedOver) return Promise.reject(new PresyncError(ErrorCodes.BAD_PHASE, 'the target QEMU runs the migrated guest; it is not restarted'));
    if (!this.owned) return Promise.reject(new PresyncError(ErrorCodes.BAD_PHASE, 'the attached target QEMU belongs to its launcher; presync does not restart it'));
    this.#restarting ??= (async () => {
      try {
        const old = this.#vm;
        this.#vm = undefined;
        if (old) await old.dispose().catch(() => undefined);
        if (this.#closing) return;
        for (let i = 0; ; i++) {
          try {
            await this.#boot();
            return;
          } catch (e) {
            this.o.onEvent?.({ event: 'qemu-error', error: toPresyncError(e, ErrorCodes.QEMU).toJSON() });
            if (i >= 4 || this.#closing) throw e;
            await sleep(200 * 2 ** i);
          }
        }
      } finally {
        this.#restarting = undefined;
      }
    })();
    return this.#restarting;
  }

  /** The hook the target agent calls after verifying the image: resolves once this QEMU runs the guest. */
  hook(): HandoverHook {
    return {
      start: async ({ deviceState }) => {
        if (this.#restarting) await this.#restarting;
        const qmp = this.qmp;
        if (this.#spoiled || !qmp || qmp.isClosed || this.#vm?.hasExited) throw new PresyncError(ErrorCodes.HANDOVER_HOOK, 'the target QEMU is not running; it cannot take the guest');
        try {
          await startIncomingGuest(qmp, this.o.runTimeoutMs ?? 30_000, () => this.#beforeCont(qmp, deviceState));
        } catch (e) {
          const err = toPresyncError(e, ErrorCodes.QEMU);
          // The source resumes its guest on this answer: this QEMU must not
          // run it too (a `cont` that timed out may still take effect), so it
          // is replaced (or, if attached, stopped) before the failure is reported.
          if (this.owned) {
            await this.restart().catch(() => undefined);
            throw new PresyncError(ErrorCodes.HANDOVER_HOOK, `the target QEMU did not start the guest (${err.code}: ${err.message}); it was stopped`, { cause: e });
          }
          throw await stopAttachedAfterFailedStart(qmp, err, (why) => (this.#spoiled ??= why));
        }
        this.#handedOver = true;
        this.o.onEvent?.({ event: 'qemu-running', pid: this.pid ?? -1, resumedAtMs: this.#resumedAtMs });
      },
    };
  }

  /**
   * The guest is about to run here: nothing may write its disks over NBD any
   * more, and with --verify-disk the source's digests (taken with its vCPUs
   * stopped, after its mirrors completed) must match this side's disks.
   */
  #stopNbd(qmp: QmpClient): Promise<void> {
    this.#nbdStop ??= this.o.nbd ? stopNbdExports(qmp) : Promise.resolve();
    return this.#nbdStop;
  }

  async #beforeCont(qmp: QmpClient, deviceState: Uint8Array): Promise<void> {
    await this.#stopNbd(qmp);
    const want = decodeDiskDigests(deviceState);
    if (!want) return;
    this.prehashDisks();
    const t0 = this.#prehash?.at ?? performance.now();
    const mine = (await this.#prehash?.digests) ?? [];
    const diff = compareDiskDigests(want, mine);
    if (diff.length > 0) throw new PresyncError(ErrorCodes.DISK_VERIFY, `the target's disks differ from the source's: ${diff.join('; ')}`);
    this.o.onEvent?.({ event: 'disk-verified', disks: want.map((w) => w.key), ms: Math.round((performance.now() - t0) * 10) / 10 });
  }

  /**
   * Stops a QEMU still waiting for a guest; `alsoRunning` also stops one that
   * runs the migrated guest. An attached QEMU is never stopped: presync only
   * lets go of its QMP connection.
   */
  async close(opts: { alsoRunning?: boolean } = {}): Promise<void> {
    this.#closing = true;
    if (this.#restarting) await this.#restarting.catch(() => undefined);
    this.#attached?.close();
    const vm = this.#vm;
    if (!vm) return;
    if (!this.#handedOver || opts.alsoRunning) await vm.dispose();
    else {
      // Leave the migrated guest running; only stop following it.
      await vm.detach();
    }
  }
}

/** Sets the target's capabilities and `migrate-incoming`; returns the uri a source can connect to. */
async function listenIncoming(qmp: QmpClient, listenUri: string): Promise<string> {
  await setCapabilities(qmp, TARGET_CAPABILITIES);
  await qmp.execute('migrate-incoming', { uri: listenUri });
  const info = await qmp.execute('query-migrate');
  const addr = info.socketAddresses[0];
  return addr ? `tcp:${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${addr.port}` : listenUri;
}

/**
 * Checks a QEMU someone else started before presync drives it: waiting for an
 * incoming migration that nobody has set up yet, its RAM a shared file that
 * is the agent's image, the expected machine type. Throws PRESYNC_ERR_QEMU
 * naming what to change.
 */
export async function checkAttachedTarget(qmp: QmpClient, a: AttachTarget): Promise<VmDescription> {
  const st = await qmp.execute('query-status');
  if (st.status !== 'inmigrate') {
    throw new PresyncError(ErrorCodes.QEMU, `the QEMU on ${a.qmpSocket} is in status ${st.status}, not inmigrate: start it with -incoming defer (and -S) so it waits for the guest`);
  }
  const mig = await qmp.execute('query-migrate');
  if ((mig.status !== undefined && mig.status !== 'none') || mig.socketAddresses.length > 0) {
    throw new PresyncError(ErrorCodes.QEMU, `the QEMU on ${a.qmpSocket} already has an incoming migration (${mig.status ?? 'listening'}): start it with -incoming defer and leave migrate-incoming to presync`);
  }
  const d = await describeVm(qmp);
  for (const b of d.backends ?? [{ id: d.backendId, memPath: d.memPath }]) {
    if (!isAbsolute(b.memPath)) {
      throw new PresyncError(ErrorCodes.QEMU, `the RAM backend ${b.id} of the QEMU on ${a.qmpSocket} has a relative mem-path (${b.memPath}); give it an absolute one so presync knows which file it is`);
    }
  }
  if (resolve(d.memPath) !== resolve(a.image)) {
    const several = (d.backends?.length ?? 1) > 1 ? ` (its first RAM backend, ${d.backendId}: the machine's memory-backend, else the first by id)` : '';
    throw new PresyncError(ErrorCodes.QEMU, `the QEMU on ${a.qmpSocket} has its RAM in ${d.memPath}${several}, not in --image ${a.image}: they must be the same file`);
  }
  if (a.machine !== undefined && d.machine !== a.machine) {
    throw new PresyncError(ErrorCodes.QEMU, `the QEMU on ${a.qmpSocket} is machine ${d.machine}, not --machine ${a.machine}: both ends must run the same machine type`);
  }
  return d;
}

/**
 * Attach mode, after `cont` failed or timed out: the source resumes its guest
 * on a definite failure, so the attached QEMU (which presync may not kill)
 * must be seen stopped first. If it is, the failure is reported (the source
 * rolls back); if presync cannot tell, it reports a lost connection instead,
 * so the source keeps its guest paused, in doubt, rather than risk running it twice.
 */
async function stopAttachedAfterFailedStart(qmp: QmpClient, err: PresyncError, spoil: (why: Spoiled) => void): Promise<PresyncError> {
  try {
    await qmp.execute('stop', undefined, { timeoutMs: 5000 });
    const st = await qmp.execute('query-status', undefined, { timeoutMs: 5000 });
    if (!st.running) {
      spoil({ reason: 'attempt-failed', error: new PresyncError(ErrorCodes.QEMU, `the attached target QEMU did not start the guest (${err.code}: ${err.message}); presync stopped it and leaves it to its launcher`) });
      return new PresyncError(ErrorCodes.HANDOVER_HOOK, `the attached target QEMU did not start the guest (${err.code}: ${err.message}); it is stopped`, { cause: err });
    }
  } catch {
    /* cannot tell: in doubt below */
  }
  const doubt = new PresyncError(ErrorCodes.HANDOVER_IN_DOUBT, `the attached target QEMU did not confirm it started the guest (${err.code}: ${err.message}) nor that it is stopped: check it before resuming the source`);
  spoil({ reason: 'in-doubt', error: doubt });
  // CONNECTION: the session cuts the connection without an ERROR frame, so the source stays paused (in doubt).
  return new PresyncError(ErrorCodes.CONNECTION, doubt.message, { cause: err });
}

export function removeImageSidecar(imagePath: string): void {
  rmSync(metaPath(imagePath), { force: true });
}
