/**
 * `presync bench qemu --vm real`: the real test VM (real-vm.ts; 1 GiB, ext4
 * root on virtio-blk, virtio-net on a tap) migrated with presync and with
 * stock QEMU over the same shaped 1 Gbit/s link, in the lab network
 * (vm-network.ts), while a client in the third namespace talks to the guest's
 * echo service over one TCP connection and the guest's disk writer fsyncs
 * records. Per run: launch→running, pause (source STOP → target RESUME), the
 * client-seen blackout and whether its connection survived, bytes, the memory
 * workload's continuity check and the disk writer's check on the target.
 *
 * Disks: `shared` (the default) is QEMU's shared-storage case: source and
 * target open the same image path (a file on this machine standing for
 * NFS/Ceph); QEMU inactivates it on the source and activates it on the
 * target. `copy` is non-shared storage: each side has its own image (the
 * target's empty); presync mirrors the disk into the target QEMU's NBD export
 * from the start of presync (`qemu serve --nbd-listen`, `qemu migrate
 * --copy-storage all --verify-disk`), stock QEMU as libvirt's
 * --copy-storage-all does: NBD export + blockdev-mirror started at launch,
 * migrate once the mirror is ready, the mirror completed at pre-switchover.
 *
 * The target is started as users start it, `presync qemu serve -- qemu-system-x86_64
 * ARGS…`; stock QEMU's target is the same command line without presync.
 */
import { existsSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, PresyncError, toPresyncError } from '../core/errors.ts';
import { makeResults, readResults, type ResultRun, type ResultsFile } from '../engine/results-file.ts';
import { metaPath } from '../guest/target-image.ts';
import { checkContinuity, lastHeartbeat, type ContinuityVerdict } from '../qemu/guest-continuity.ts';
import { qmpTimestampMs } from '../qemu/qemu-controller.ts';
import { DiskMirror, startNbdExports, stopNbdExports } from '../qemu/disk-mirror.ts';
import type { QmpEvent } from '../qemu/qmp.ts';
import { SerialLog } from '../qemu/serial.ts';
import { stockMigrate, UNCAPPED_BANDWIDTH } from '../qemu/stock.ts';
import { buildQemuArgs, launchVm, matchingTargetOptions, type Accel, type LaunchOptions, type MachineSpec, type Vm } from '../qemu/vm.ts';
import { sleep } from '../transport/deadline.ts';
import { BlackoutClient, blackoutClientScript, gapAcross, type BlackoutReport } from './blackout-client.ts';
import { JsonChild, type JsonRecord } from './child-json.ts';
import { CLI } from './cli-entry.ts';
import { benchRunRecord, median, switchoverBreakdown, type QemuBenchRun, type RunKind } from './qemu-bench.ts';
import { buildRealVm, checkDiskContinuity, copyRootDisk, ECHO_PORT, lastDiskWritten, realVmSpec, rootDiskArgs, type DiskVerdict, type RealVmImages } from './real-vm.ts';
import { createVmNetwork, type VmNetwork } from './vm-network.ts';

export const REAL_VM_WORKLOADS = ['text', 'audio', 'movie', 'idle'] as const;
export const DISK_MODES = ['shared', 'copy'] as const;
/** The target QEMU's NBD port in the target namespace (disk mode copy; one run at a time). */
const NBD_PORT = 10809;
export type DiskModeName = (typeof DISK_MODES)[number];

export interface RealVmBenchOptions {
  readonly workloads: readonly string[];
  readonly reps: number;
  /** Guest RAM, bytes; default 1 GiB. */
  readonly memBytes: number;
  readonly presyncForMs: number;
  readonly accel?: Accel;
  readonly policy?: string;
  readonly disk?: DiskModeName;
  readonly stockBandwidthBytesPerSec?: number;
  /** The client's TCP minimum RTO, ms (vm-network.ts); default the kernel's 200 ms. */
  readonly clientRtoMinMs?: number;
  /** Which migrations to run; default both (the e2e test runs presync's only). */
  readonly kinds?: readonly RunKind[];
  readonly onProgress?: (line: string) => void;
}

export interface RealVmRun extends QemuBenchRun {
  /** What the client in the third namespace saw; null if it never ran. */
  readonly client: BlackoutReport | null;
  /**
   * The client-seen blackout of the move: the longest gap between answers
   * that overlaps the pause (source STOP → target RESUME), ms; null if
   * unknown. The client's longest gap overall (`client.longestGapMs`) may be
   * a stall at another time.
   */
  readonly clientGapMs: number | null;
  /** The disk writer's check on the target; null if the migration did not complete. */
  readonly disk: DiskVerdict | null;
  /** Disk bytes copied by the migration (0 with shared storage). */
  readonly diskBytes: number;
}

export interface RealVmWorkloadSummary {
  workload: string;
  presyncLaunchToRunningMsMedian: number | null;
  stockLaunchToRunningMsMedian: number | null;
  ratio: number | null;
  presyncDowntimeMsMedian: number | null;
  stockDowntimeMsMedian: number | null;
  /** The gap across the pause (RealVmRun.clientGapMs). */
  presyncClientGapMsMedian: number | null;
  stockClientGapMsMedian: number | null;
  /** The client's longest gap over the whole run, wherever it was. */
  presyncClientLongestGapMsMedian: number | null;
  stockClientLongestGapMsMedian: number | null;
  /** Every presync run's client connection survived. */
  connectionSurvived: boolean;
  stockConnectionSurvived: boolean;
  /** Every presync run's disk writer found all its records on the target's disk. */
  diskVerified: boolean;
  stockDiskVerified: boolean;
  presyncBytesMedian: number | null;
  stockBytesMedian: number | null;
  presyncDiskBytesMedian: number | null;
  stockDiskBytesMedian: number | null;
  guestOk: boolean;
  stockGuestOk: boolean;
}

export interface RealVmBenchResult {
  readonly network: string;
  readonly versions: string;
  readonly options: { reps: number; memBytes: number; presyncForMs: number; accel: Accel; policy: string; disk: DiskModeName; stockBandwidthBytesPerSec: number; clientRtoMinMs: number | null; workloads: readonly string[] };
  readonly runs: RealVmRun[];
  readonly workloads: RealVmWorkloadSummary[];
}

/** The disk of one run: each side's -drive arguments, and what is removed afterwards. */
interface DiskSetup {
  readonly sourceArgs: string[];
  readonly targetArgs: string[];
  readonly files: string[];
  /** Non-shared: the disk is copied over NBD into the target's own image. */
  readonly copy?: boolean;
}

/** How a disk mode prepares a run's disk (the place a non-shared mode plugs in). */
type DiskMode = (images: RealVmImages, dir: string, name: string) => DiskSetup;

const DISK_MODE_SETUP: Record<DiskModeName, DiskMode> = {
  // Shared storage: one image, the same path on both sides.
  shared: (images, dir, name) => {
    const path = copyRootDisk(images, join(dir, `${name}.root.img`));
    return { sourceArgs: rootDiskArgs(path), targetArgs: rootDiskArgs(path), files: [path] };
  },
  // Non-shared storage: the target starts from an empty image of the same size.
  copy: (images, dir, name) => {
    const src = copyRootDisk(images, join(dir, `${name}.root.img`));
    const dst = join(dir, `${name}.root-target.img`);
    writeFileSync(dst, '');
    truncateSync(dst, statSync(src).size);
    return { sourceArgs: rootDiskArgs(src), targetArgs: rootDiskArgs(dst), files: [src, dst], copy: true };
  },
};

interface Ctx {
  readonly o: RealVmBenchOptions;
  readonly images: RealVmImages;
  readonly net: VmNetwork;
  readonly dir: string;
  readonly shm: string;
  readonly secretFile: string;
  readonly disk: DiskMode;
  readonly stockBandwidth: number;
}

const round1 = (x: number | null): number | null => (x === null ? null : Math.round(x * 10) / 10);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function spec(ctx: Ctx, workload: string, ram: MachineSpec['ram']): MachineSpec {
  // The memory workload's buffer: a quarter of RAM (256 MiB of 1 GiB).
  const workloadMem = `${Math.max(16, Math.floor(ctx.o.memBytes / 2 ** 20 / 4))}M`;
  return realVmSpec({ images: ctx.images, memBytes: ctx.o.memBytes, ram, workload, workloadMem, cmdline: ctx.net.guestCmdline, accel: ctx.o.accel });
}

/** Booted: the memory workload checked its buffer once, the disk writer its records, the echo service listens. */
async function waitHealthy(vm: Vm): Promise<void> {
  await vm.serial.waitForLine(/^ECHO LISTEN/, 180_000);
  const ok = await vm.serial.waitForLine(/^OK \d+/, 180_000);
  await vm.serial.waitForLine(/^DISK OK/, 60_000, ok.index);
}

function startClient(ctx: Ctx): Promise<BlackoutClient> {
  return BlackoutClient.start({ prefix: ctx.net.exec(ctx.net.clientNs), script: blackoutClientScript(CLI), host: ctx.net.guestIp, port: ECHO_PORT, timeoutMs: 60_000 });
}

/** After the move: the memory check, the disk check, then the client's report (it kept talking meanwhile). */
async function judge(src: Vm, dstSerial: SerialLog, client: BlackoutClient): Promise<{ guest: ContinuityVerdict; disk: DiskVerdict; report: BlackoutReport }> {
  const lastHb = await lastHeartbeat(src.serial);
  const lastDisk = await lastDiskWritten(src.serial);
  const guest = await checkContinuity(dstSerial, src.serial, lastHb);
  const disk = await checkDiskContinuity(dstSerial, src.serial, lastDisk);
  const report = await client.stop();
  return { guest, disk, report };
}

/** The gap across the pause, and where it lay against STOP and RESUME. */
function acrossPause(report: BlackoutReport, stopAt: number | null, resumedAt: number | null): { clientGapMs: number | null; detail: Record<string, number | null> } {
  const g = stopAt !== null && resumedAt !== null ? gapAcross(report.gaps, stopAt, resumedAt) : null;
  return {
    clientGapMs: g === null ? null : round1(g.gapMs),
    detail: {
      clientGapFromStopMs: g !== null && stopAt !== null ? round1(g.startMs - stopAt) : null,
      clientAnswerAfterResumeMs: g !== null && resumedAt !== null ? round1(g.endMs - resumedAt) : null,
      clientLongestGapMs: report.longestGapMs,
      clientLongestGapFromStopMs: report.longestGapStartMs !== null && stopAt !== null ? round1(report.longestGapStartMs - stopAt) : null,
    },
  };
}

function failed(workload: string, kind: RunKind, rep: number, e: unknown, client: BlackoutReport | null = null): RealVmRun {
  const err = toPresyncError(e);
  return {
    workload, kind, rep, outcome: 'failed', error: { code: err.code, message: err.message },
    launchToRunningMs: null, downtimeMs: null, qemuDowntimeMs: null, bytes: 0, presyncBytes: 0, finalBytes: 0, qemuStreamBytes: 0,
    guest: null, detail: {}, series: [], client, clientGapMs: null, disk: null, diskBytes: 0,
  };
}

/**
 * The target as users start it: `presync qemu serve … -- qemu-system-x86_64
 * ARGS…` with the target QEMU's own command line (the source's devices, its
 * own RAM file and tap); serve adds -incoming defer, -S and its QMP socket.
 */
function startTarget(ctx: Ctx, launch: LaunchOptions, copy: boolean): JsonChild {
  const host = ctx.net.link.addrB;
  return new JsonChild(
    [...ctx.net.exec(ctx.net.targetNs), process.execPath, CLI, 'qemu', 'serve', '--listen', `${host}:0`, '--secret-file', ctx.secretFile, '--qemu-listen', `${host}:0`, '--json',
      ...(copy ? ['--nbd-listen', `${host}:${NBD_PORT}`] : []),
      '--', 'qemu-system-x86_64', ...buildQemuArgs({ ...launch, incoming: undefined })],
    'presync qemu serve',
  );
}

async function presyncRun(ctx: Ctx, workload: string, rep: number): Promise<RealVmRun> {
  const name = `p-${workload}-${rep}`;
  const srcRam = join(ctx.shm, `${name}-src.ram`);
  const dstRam = join(ctx.shm, `${name}-dst.ram`);
  const presyncQmp = join(ctx.dir, `${name}-src.qmp-presync`);
  const dstSerialPath = join(ctx.dir, `${name}-dst.serial`);
  const outFile = join(ctx.dir, `${name}.result.json`);
  const disk = ctx.disk(ctx.images, ctx.dir, name);
  const s = spec(ctx, workload, { kind: 'file', memPath: srcRam });
  let src: Vm | undefined;
  let serve: JsonChild | undefined;
  let migrate: JsonChild | undefined;
  let client: BlackoutClient | undefined;
  let targetPid: number | null = null;
  let dstSerial: SerialLog | undefined;
  try {
    src = await launchVm({
      ...s,
      qmpSocket: join(ctx.dir, `${name}-src.qmp`),
      serialLog: join(ctx.dir, `${name}-src.serial`),
      commandPrefix: ctx.net.exec(ctx.net.sourceNs),
      extraArgs: ['-qmp', `unix:${presyncQmp.replaceAll(',', ',,')},server=on,wait=off`, ...disk.sourceArgs, ...ctx.net.nicArgs('source')],
    });
    await waitHealthy(src);
    client = await startClient(ctx);
    const targetLaunch = matchingTargetOptions(s, {
      // The launcher's own QMP socket (serve adds presync's).
      memPath: dstRam, qmpSocket: `${dstRam}.launcher.qmp`, serialLog: dstSerialPath, extraArgs: [...disk.targetArgs, ...ctx.net.nicArgs('target')],
    });
    serve = startTarget(ctx, targetLaunch, disk.copy === true);
    const listening = await serve.next((l) => l.event === 'listening', 120_000, 'listening line');
    migrate = new JsonChild(
      [...ctx.net.exec(ctx.net.sourceNs), process.execPath, CLI, 'qemu', 'migrate', '--qmp', presyncQmp, '--to', `${ctx.net.link.addrB}:${String(listening.port)}`,
        '--qemu-uri', String(listening.qemuUri), '--secret-file', ctx.secretFile, '--launch-after', `${ctx.o.presyncForMs}ms`, '--json', '--out', outFile,
        '--policy', ctx.o.policy ?? 'presync',
        ...(disk.copy ? ['--copy-storage', 'all', '--nbd', `${ctx.net.link.addrB}:${NBD_PORT}`, '--verify-disk'] : [])],
      'presync qemu migrate',
    );
    const code = await migrate.wait(ctx.o.presyncForMs + 240_000);
    const result = migrate.lines.at(-1);
    if (!result || result.outcome === undefined) throw new PresyncError(ErrorCodes.INTERNAL, `presync qemu migrate exited (code ${code}) without a result: ${migrate.stderrTail}`);
    const q = (result.qemu ?? {}) as JsonRecord;
    let series: ResultRun['series'] = [];
    try {
      series = readResults(outFile).runs[0]?.series ?? [];
    } catch {
      /* a failed run may not have written it */
    }
    const base = { presyncBytes: num(result.presyncBytes) ?? 0, finalBytes: num(result.finalBytes) ?? 0, qemuStreamBytes: num(q.transferredBytes) ?? 0, series };
    if (result.outcome !== 'done') {
      const err = (result.error ?? { code: 'PRESYNC_ERR_INTERNAL', message: 'no error reported' }) as { code: string; message: string };
      const report = await client.stop();
      client = undefined;
      return { ...failed(workload, 'presync', rep, new PresyncError(ErrorCodes.INTERNAL, `${err.code}: ${err.message}`), report), ...base, outcome: result.outcome as QemuBenchRun['outcome'], error: err };
    }
    const handed = await serve.next((l) => l.event === 'handed-over', 30_000, 'handed-over line');
    targetPid = num(handed.pid);
    await src.exited;
    dstSerial = new SerialLog(dstSerialPath);
    const { guest, disk: diskVerdict, report } = await judge(src, dstSerial, client);
    client = undefined;
    const stopAt = num(q.sourceStopAtMs);
    const resumedAt = num(handed.resumedAtMs);
    const across = acrossPause(report, stopAt, resumedAt);
    return {
      workload, kind: 'presync', rep, outcome: 'done', error: null, ...base,
      launchToRunningMs: num(result.launchToRunningMs),
      downtimeMs: stopAt !== null && resumedAt !== null ? round1(resumedAt - stopAt) : null,
      qemuDowntimeMs: num(q.downtimeMs),
      bytes: base.presyncBytes + base.finalBytes + base.qemuStreamBytes,
      guest,
      detail: {
        ...switchoverBreakdown(result, series),
        engineDowntimeMs: num(result.engineDowntimeMs),
        residualPagesAtLaunch: num(result.residualPagesAtLaunch),
        liveRounds: num(result.liveRounds),
        verified: result.verified === true,
        ...(disk.copy ? { diskReadyMs: num(q.diskReadyMs), diskCompleteMs: num(q.diskCompleteMs), diskVerifyMs: num(q.diskVerifyMs), diskEqual: q.diskVerified === true } : {}),
        ...across.detail,
      },
      client: report,
      clientGapMs: across.clientGapMs,
      disk: diskVerdict,
      diskBytes: num(q.diskBytes) ?? 0,
    };
  } catch (e) {
    const report = client ? await client.stop().catch(() => null) : null;
    client = undefined;
    return failed(workload, 'presync', rep, e, report);
  } finally {
    client?.kill();
    migrate?.kill('SIGKILL');
    if (targetPid !== null) {
      try {
        process.kill(targetPid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    serve?.kill('SIGTERM');
    await serve?.wait(10_000);
    serve?.kill('SIGKILL');
    await dstSerial?.close();
    await src?.dispose().catch(() => undefined);
    for (const f of [srcRam, dstRam, metaPath(dstRam), `${dstRam}.qmp`, `${dstRam}.launcher.qmp`, ...disk.files]) rmSync(f, { force: true });
  }
}

async function stockRun(ctx: Ctx, workload: string, rep: number): Promise<RealVmRun> {
  const name = `s-${workload}-${rep}`;
  const disk = ctx.disk(ctx.images, ctx.dir, name);
  const s = spec(ctx, workload, { kind: 'anonymous' });
  let src: Vm | undefined;
  let dst: Vm | undefined;
  let client: BlackoutClient | undefined;
  try {
    src = await launchVm({
      ...s, qmpSocket: join(ctx.dir, `${name}-src.qmp`), serialLog: join(ctx.dir, `${name}-src.serial`), commandPrefix: ctx.net.exec(ctx.net.sourceNs),
      extraArgs: [...disk.sourceArgs, ...ctx.net.nicArgs('source')],
    });
    dst = await launchVm(
      matchingTargetOptions(s, {
        memPath: '', qmpSocket: join(ctx.dir, `${name}-dst.qmp`), serialLog: join(ctx.dir, `${name}-dst.serial`), commandPrefix: ctx.net.exec(ctx.net.targetNs),
        extraArgs: [...disk.targetArgs, ...ctx.net.nicArgs('target')],
      }),
    );
    await waitHealthy(src);
    client = await startClient(ctx);
    // The stock guest runs as long before its migrate as the presync guest before its launch.
    await sleep(ctx.o.presyncForMs);
    let stopAt: number | null = null;
    let resumedAt: number | null = null;
    const offStop = src.qmp.onEvent((ev: QmpEvent) => {
      if (ev.event === 'STOP' && stopAt === null) stopAt = qmpTimestampMs(ev);
    });
    const offResume = dst.qmp.onEvent((ev: QmpEvent) => {
      if (ev.event === 'RESUME' && resumedAt === null) resumedAt = qmpTimestampMs(ev);
    });
    let r;
    // Non-shared disk, as libvirt's --copy-storage-all: at launch the target exports its disk, the source mirrors into it, migrate once ready.
    const t0 = performance.now();
    let mirror: DiskMirror | undefined;
    let mirrorSetupMs = 0;
    try {
      if (disk.copy) {
        const nbd = { host: ctx.net.link.addrB, port: NBD_PORT };
        await startNbdExports(dst.qmp, nbd);
        mirror = await DiskMirror.start(src.qmp, { disks: 'all', nbd });
        await mirror.whenReady(300_000);
        mirrorSetupMs = performance.now() - t0;
      }
      const m = mirror;
      r = await stockMigrate(src.qmp, dst.qmp, {
        maxBandwidthBytesPerSec: ctx.stockBandwidth, listenUri: `tcp:${ctx.net.link.addrB}:0`, timeoutMs: 300_000,
        ...(m ? { atPreSwitchover: () => m.complete() } : {}),
      });
    } catch (e) {
      await mirror?.cancel();
      throw e;
    } finally {
      offStop();
      offResume();
    }
    if (disk.copy) await stopNbdExports(dst.qmp).catch(() => undefined);
    // QEMU leaves the source paused after a completed migration: stop it as a launcher would.
    await src.kill();
    const { guest, disk: diskVerdict, report } = await judge(src, dst.serial, client);
    client = undefined;
    const st = stopAt as number | null;
    const rt = resumedAt as number | null;
    const across = acrossPause(report, st, rt);
    return {
      workload, kind: 'stock', rep, outcome: 'done', error: null,
      launchToRunningMs: round1(mirrorSetupMs + r.launchToRunningMs),
      downtimeMs: st !== null && rt !== null ? round1(rt - st) : null,
      qemuDowntimeMs: r.downtimeMs,
      bytes: r.transferredBytes, presyncBytes: 0, finalBytes: r.transferredBytes, qemuStreamBytes: r.transferredBytes,
      guest,
      detail: {
        iterations: r.iterations, totalTimeMs: r.totalTimeMs, mbps: r.mbps, ramTotal: r.ramTotal, maxBandwidthBytesPerSec: ctx.stockBandwidth,
        ...(mirror ? { diskMirrorSetupMs: round1(mirrorSetupMs), diskCompleteMs: mirror.figures.completeMs } : {}),
        ...across.detail,
      },
      series: [],
      client: report,
      clientGapMs: across.clientGapMs,
      disk: diskVerdict,
      diskBytes: mirror?.figures.bytes ?? 0,
    };
  } catch (e) {
    const report = client ? await client.stop().catch(() => null) : null;
    client = undefined;
    return failed(workload, 'stock', rep, e, report);
  } finally {
    client?.kill();
    await dst?.dispose().catch(() => undefined);
    await src?.dispose().catch(() => undefined);
    for (const f of disk.files) rmSync(f, { force: true });
  }
}

export function summarizeRealVm(workloads: readonly string[], runs: readonly RealVmRun[]): RealVmWorkloadSummary[] {
  return workloads.map((w) => {
    const of = (k: RunKind) => runs.filter((r) => r.workload === w && r.kind === k);
    const done = (k: RunKind) => of(k).filter((r) => r.outcome === 'done');
    const pl = median(done('presync').map((r) => r.launchToRunningMs));
    const sl = median(done('stock').map((r) => r.launchToRunningMs));
    const all = (k: RunKind, pred: (r: RealVmRun) => boolean) => of(k).length > 0 && of(k).every(pred);
    return {
      workload: w,
      presyncLaunchToRunningMsMedian: round1(pl),
      stockLaunchToRunningMsMedian: round1(sl),
      ratio: pl !== null && sl !== null && pl > 0 ? Math.round((sl / pl) * 100) / 100 : null,
      presyncDowntimeMsMedian: round1(median(done('presync').map((r) => r.downtimeMs))),
      stockDowntimeMsMedian: round1(median(done('stock').map((r) => r.downtimeMs))),
      presyncClientGapMsMedian: round1(median(done('presync').map((r) => r.clientGapMs))),
      stockClientGapMsMedian: round1(median(done('stock').map((r) => r.clientGapMs))),
      presyncClientLongestGapMsMedian: round1(median(done('presync').map((r) => r.client?.longestGapMs ?? null))),
      stockClientLongestGapMsMedian: round1(median(done('stock').map((r) => r.client?.longestGapMs ?? null))),
      connectionSurvived: all('presync', (r) => r.client?.connectionSurvived === true),
      stockConnectionSurvived: all('stock', (r) => r.client?.connectionSurvived === true),
      diskVerified: all('presync', (r) => r.disk?.ok === true),
      stockDiskVerified: all('stock', (r) => r.disk?.ok === true),
      presyncBytesMedian: median(done('presync').map((r) => r.bytes)),
      stockBytesMedian: median(done('stock').map((r) => r.bytes)),
      presyncDiskBytesMedian: median(done('presync').map((r) => r.diskBytes)),
      stockDiskBytesMedian: median(done('stock').map((r) => r.diskBytes)),
      guestOk: all('presync', (r) => r.outcome === 'done' && r.guest?.ok === true),
      stockGuestOk: all('stock', (r) => r.outcome === 'done' && r.guest?.ok === true),
    };
  });
}

export async function runRealVmBench(o: RealVmBenchOptions): Promise<RealVmBenchResult> {
  for (const w of o.workloads) {
    if (!(REAL_VM_WORKLOADS as readonly string[]).includes(w)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `unknown real-VM workload "${w}"; known: ${REAL_VM_WORKLOADS.join(', ')}`);
  }
  const diskMode = o.disk ?? 'shared';
  if (!(DISK_MODES as readonly string[]).includes(diskMode)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--disk must be one of ${DISK_MODES.join(', ')}, got "${diskMode}"`);
  if (!Number.isSafeInteger(o.reps) || o.reps < 1) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `reps must be a positive integer, got ${o.reps}`);
  if (!Number.isSafeInteger(o.memBytes) || o.memBytes < 256 * 2 ** 20 || o.memBytes % 2 ** 20 !== 0) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `the real VM needs a whole number of MiB, at least 256M, got ${o.memBytes} B`);
  }
  const images = buildRealVm();
  const say = o.onProgress ?? (() => undefined);
  const net = createVmNetwork({ rate: '1gbit', ...(o.clientRtoMinMs !== undefined ? { clientRtoMinMs: o.clientRtoMinMs } : {}) });
  say(`network: ${net.description}`);
  const dir = mkdtempSync(join(tmpdir(), 'presync-real-vm-bench-'));
  const shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'presync-real-vm-bench-'));
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, `real-vm-bench-${process.pid}-${Date.now()}-secret\n`, { mode: 0o600 });
  const stockBandwidth = o.stockBandwidthBytesPerSec ?? UNCAPPED_BANDWIDTH;
  const ctx: Ctx = { o, images, net, dir, shm, secretFile, disk: DISK_MODE_SETUP[diskMode], stockBandwidth };
  const runs: RealVmRun[] = [];
  try {
    for (const w of o.workloads) {
      for (let rep = 0; rep < o.reps; rep++) {
        const order: RunKind[] = rep % 2 === 0 ? ['presync', 'stock'] : ['stock', 'presync'];
        for (const kind of order.filter((k) => (o.kinds ?? order).includes(k))) {
          const r = kind === 'presync' ? await presyncRun(ctx, w, rep) : await stockRun(ctx, w, rep);
          say(describeRealVmRun(r));
          runs.push(r);
        }
      }
    }
  } finally {
    net.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  }
  return {
    network: net.description,
    versions: images.versions,
    options: { reps: o.reps, memBytes: o.memBytes, presyncForMs: o.presyncForMs, accel: o.accel ?? 'tcg', policy: o.policy ?? 'presync', disk: diskMode, stockBandwidthBytesPerSec: stockBandwidth, clientRtoMinMs: o.clientRtoMinMs ?? null, workloads: [...o.workloads] },
    runs,
    workloads: summarizeRealVm(o.workloads, runs),
  };
}

export function describeRealVmRun(r: RealVmRun): string {
  const head = `${r.workload} #${r.rep + 1} ${r.kind}`;
  const c = r.client;
  const longest = c && c.longestGapMs !== r.clientGapMs ? `; longest gap ${c.longestGapMs} ms, ${r.detail.clientLongestGapFromStopMs ?? '?'} ms after STOP` : '';
  const client = c
    ? `client gap across the pause ${r.clientGapMs ?? '?'} ms (from ${r.detail.clientGapFromStopMs ?? '?'} ms after STOP to ${r.detail.clientAnswerAfterResumeMs ?? '?'} ms after RESUME${longest}), ` +
      `${c.answered}/${c.sent} answered, connection ${c.connectionSurvived ? 'survived' : `LOST: ${c.error}`}`
    : 'no client report';
  if (r.outcome !== 'done') return `${head}: ${r.outcome}: ${r.error?.code}: ${r.error?.message}; ${client}`;
  const extra = r.kind === 'presync'
    ? `; wait ${r.detail.launchWaitMs} + live rounds ${r.detail.liveRoundsMs} + pre-switchover ${r.detail.migrateToPreSwitchoverMs} + final ${r.detail.finalScanAndResidualMs} + verify ${r.detail.verifyMs} + device state ${r.detail.deviceStateMs} + target start ${r.detail.targetStartConfirmMs} ms`
    : `; ${r.detail.iterations} rounds`;
  return `${head}: launch→running ${r.launchToRunningMs} ms, pause ${r.downtimeMs} ms, ${client}, ${(r.bytes / 2 ** 20).toFixed(1)} MiB RAM+state, disk ${r.disk?.ok ? `OK (${r.disk.targetVerified} records)` : `NOT OK: ${r.disk?.reason}`}, guest ${r.guest?.ok ? 'OK' : `NOT OK: ${r.guest?.reason}`}${extra}`;
}

/** The one-line JSON `bench qemu --vm real --json` ends with. */
export function realVmBenchJson(res: RealVmBenchResult): Record<string, unknown> {
  return {
    vm: 'real',
    workloads: res.workloads.map((w) => ({ ...w })),
    disk: res.options.disk,
    reps: res.options.reps,
    memBytes: res.options.memBytes,
    accel: res.options.accel,
    presyncForMs: res.options.presyncForMs,
    policy: res.options.policy,
    clientRtoMinMs: res.options.clientRtoMinMs,
    network: res.network,
  };
}

/** presync-results/1 of kind qemu-bench, like the test guest's bench, with the client and disk figures in each run's summary. */
export function realVmBenchResults(res: RealVmBenchResult, createdBy: string): ResultsFile {
  const runs: ResultRun[] = res.runs.map((r) =>
    benchRunRecord(r, res.options, 'real ', {
      clientGapMs: r.clientGapMs,
      clientLongestGapMs: r.client?.longestGapMs ?? null,
      connectionSurvived: r.client?.connectionSurvived === true,
      diskVerified: r.disk?.ok === true,
      diskCheck: r.disk?.reason || (r.disk ? 'ok' : 'not checked'),
      diskBytes: r.diskBytes,
    }),
  );
  return makeResults({ kind: 'qemu-bench', createdBy, params: { vm: 'real', network: res.network, versions: res.versions, ...res.options }, runs, table: res.workloads.map((w) => ({ ...w })) });
}
