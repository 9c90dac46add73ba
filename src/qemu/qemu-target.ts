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
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { ErrorCodes, PresyncError, toPresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import type { HandoverHook } from '../engine/target-session.ts';
import { metaPath, type ImageMeta } from '../guest/target-image.ts';
import { writeFileAtomic } from '../guest/atomic-file.ts';
import { qmpTimestampMs, TARGET_CAPABILITIES } from './qemu-controller.ts';
import type { QmpEvent } from './qmp.ts';
import { setCapabilities, startIncomingGuest } from './switchover.ts';
import { compareDiskDigests, decodeDiskDigests, digestDiskFile, startNbdExports, stopNbdExports, type NbdAddress, type VmDisk } from './disk-mirror.ts';
import { launchVm, type LaunchOptions, type Vm } from './vm.ts';
import { sleep } from '../transport/deadline.ts';

export interface QemuTargetOptions {
  /** Machine to start; its RAM must be a file backend whose mem-path is the agent's image. */
  readonly launch: LaunchOptions;
  /** Where QEMU listens for the source QEMU's stream, e.g. tcp:0.0.0.0:7071. */
  readonly listenUri: string;
  /** How long the hook waits for the target to run after HANDOVER, ms. Default 30 000. */
  readonly runTimeoutMs?: number;
  /** Non-shared storage: serve the target's writable disks over NBD here while waiting, for the source's mirrors. */
  readonly nbd?: { readonly listen: NbdAddress; readonly disks?: readonly string[] | 'all' };
  readonly onEvent?: (e: QemuTargetEvent) => void;
}

export type QemuTargetEvent =
  | { event: 'qemu-ready'; pid: number; uri: string; attempt: number; nbd: string | null; disks: string[] }
  | { event: 'disk-verified'; disks: string[]; ms: number }
  | { event: 'qemu-exited'; pid: number; code: number | null; signal: string | null; expected: boolean }
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
  #uri = '';
  #attempt = 0;
  #handedOver = false;
  #closing = false;
  #restarting: Promise<void> | undefined;
  #resumedAtMs: number | null = null;
  #exported: VmDisk[] = [];

  private constructor(readonly o: QemuTargetOptions) {}

  /** Starts the target QEMU and makes it listen; resolves once a source QEMU can connect. */
  static async start(o: QemuTargetOptions): Promise<QemuTarget> {
    if (o.launch.ram.kind !== 'file') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'the target QEMU needs a file RAM backend (the agent image)');
    if (!/^tcp:.+:\d+$/.test(o.listenUri)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--qemu-listen must be HOST:PORT, got ${o.listenUri}`);
    const t = new QemuTarget(o);
    await t.#boot();
    return t;
  }

  get vm(): Vm | undefined {
    return this.#vm;
  }

  /** The uri the source's QEMU must migrate to (the listen address with the port QEMU got). */
  get uri(): string {
    return this.#uri;
  }

  get handedOver(): boolean {
    return this.#handedOver;
  }

  get imagePath(): string {
    return this.o.launch.ram.kind === 'file' ? this.o.launch.ram.memPath : '';
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
    const vm = await launchVm({ ...this.o.launch, incoming: 'defer', startPaused: true });
    try {
      await setCapabilities(vm.qmp, TARGET_CAPABILITIES);
      await vm.qmp.execute('migrate-incoming', { uri: this.o.listenUri });
      if (this.o.nbd) this.#exported = await startNbdExports(vm.qmp, this.o.nbd.listen, this.o.nbd.disks ?? 'all');
      const info = await vm.qmp.execute('query-migrate');
      const addr = info.socketAddresses[0];
      this.#uri = addr ? `tcp:${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${addr.port}` : this.o.listenUri;
    } catch (e) {
      await vm.dispose().catch(() => undefined);
      throw e;
    }
    this.#vm = vm;
    this.#resumedAtMs = null;
    vm.qmp.onEvent((ev: QmpEvent) => {
      if (ev.event === 'RESUME' && this.#resumedAtMs === null) this.#resumedAtMs = qmpTimestampMs(ev);
    });
    const nbd = this.o.nbd ? `${this.o.nbd.listen.host}:${this.o.nbd.listen.port}` : null;
    this.o.onEvent?.({ event: 'qemu-ready', pid: vm.pid, uri: this.#uri, attempt: this.#attempt, nbd, disks: this.#exported.map((d) => d.key) });
    void vm.exited.then((ex) => {
      const expected = this.#closing || this.#vm !== vm;
      this.o.onEvent?.({ event: 'qemu-exited', pid: vm.pid, code: ex.code, signal: ex.signal, expected });
      // A target QEMU that died while waiting is replaced, so the next source finds one.
      if (!expected && !this.#handedOver) void this.restart().catch(() => undefined);
    });
  }

  /**
   * Kills the waiting QEMU and starts a fresh one: after a failed attempt
   * its incoming side may have consumed part of a stream. Never touches a
   * QEMU that already runs the migrated guest.
   */
  restart(): Promise<void> {
    if (this.#handedOver) return Promise.reject(new PresyncError(ErrorCodes.BAD_PHASE, 'the target QEMU runs the migrated guest; it is not restarted'));
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
        const vm = this.#vm;
        if (!vm || vm.hasExited) throw new PresyncError(ErrorCodes.HANDOVER_HOOK, 'the target QEMU is not running; it cannot take the guest');
        try {
          await startIncomingGuest(vm.qmp, this.o.runTimeoutMs ?? 30_000, () => this.#beforeCont(vm.qmp, deviceState));
        } catch (e) {
          // The source resumes its guest on this answer: this QEMU must not
          // run it too (a `cont` that timed out may still take effect), so it
          // is replaced before the failure is reported.
          await this.restart().catch(() => undefined);
          const err = toPresyncError(e, ErrorCodes.QEMU);
          throw new PresyncError(ErrorCodes.HANDOVER_HOOK, `the target QEMU did not start the guest (${err.code}: ${err.message}); it was stopped`, { cause: e });
        }
        this.#handedOver = true;
        this.o.onEvent?.({ event: 'qemu-running', pid: vm.pid, resumedAtMs: this.#resumedAtMs });
      },
    };
  }

  /**
   * The guest is about to run here: nothing may write its disks over NBD any
   * more, and with --verify-disk the source's digests (taken with its vCPUs
   * stopped, after its mirrors completed) must match this side's disks.
   */
  async #beforeCont(qmp: Vm['qmp'], deviceState: Uint8Array): Promise<void> {
    if (this.o.nbd) await stopNbdExports(qmp);
    const want = decodeDiskDigests(deviceState);
    if (!want) return;
    const t0 = performance.now();
    const mine = want.map((w) => {
      const d = this.#exported.find((x) => x.key === w.key);
      return d ? digestDiskFile(d.key, d.file) : { key: w.key, bytes: -1, sha256: '' };
    });
    const diff = compareDiskDigests(want, mine);
    if (diff.length > 0) throw new PresyncError(ErrorCodes.DISK_VERIFY, `the target's disks differ from the source's: ${diff.join('; ')}`);
    this.o.onEvent?.({ event: 'disk-verified', disks: want.map((w) => w.key), ms: Math.round((performance.now() - t0) * 10) / 10 });
  }

  /** Stops a QEMU still waiting for a guest; `alsoRunning` also stops one that runs the migrated guest. */
  async close(opts: { alsoRunning?: boolean } = {}): Promise<void> {
    this.#closing = true;
    if (this.#restarting) await this.#restarting.catch(() => undefined);
    const vm = this.#vm;
    if (!vm) return;
    if (!this.#handedOver || opts.alsoRunning) await vm.dispose();
    else {
      // Leave the migrated guest running; only stop following it.
      await vm.detach();
    }
  }
}

export function removeImageSidecar(imagePath: string): void {
  rmSync(metaPath(imagePath), { force: true });
}
