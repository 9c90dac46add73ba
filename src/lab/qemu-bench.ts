/**
 * `presync bench qemu`: real QEMU guests migrated over a real 1 Gbit/s link,
 * presync against QEMU's own pre-copy, same guest, same link, same run.
 *
 * The link is two network namespaces joined by veth with tbf (netns.ts): the
 * source QEMU and `presync qemu migrate` run in one, the target QEMU and
 * `presync qemu serve` in the other, so every byte of both kinds of migration
 * crosses the shaped veth. Where namespaces cannot be made, everything runs
 * on loopback with presync's token-bucket shaper and QEMU's max-bandwidth
 * both set to 1 Gbit/s.
 *
 * Every figure comes from QMP or from presync's own result, never from
 * guessing: downtime is the source's STOP event to the target's RESUME event
 * (QMP timestamps, one host clock), for both kinds.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, PresyncError, toPresyncError } from '../core/errors.ts';
import { metaPath } from '../guest/target-image.ts';
import { checkAppContinuity, checkContinuity, lastAppProgress, lastHeartbeat, type ContinuityVerdict } from '../qemu/guest-continuity.ts';
import { GUEST_APPS } from './app-traces.ts';
import { qmpTimestampMs } from '../qemu/qemu-controller.ts';
import type { QmpEvent } from '../qemu/qmp.ts';
import { SerialLog } from '../qemu/serial.ts';
import { QEMU_2012_DEFAULT_BANDWIDTH, stockMigrate, UNCAPPED_BANDWIDTH } from '../qemu/stock.ts';
import { launchVm, matchingTargetOptions, type Accel, type MachineSpec, type Vm } from '../qemu/vm.ts';
import { JsonChild, type JsonRecord } from './child-json.ts';
import { buildTestGuest } from './test-guest.ts';
import { createShapedLink, netnsUnavailable, type ShapedLink } from './netns.ts';
import { makeResults, readResults, type ResultRun, type ResultsFile } from '../engine/results-file.ts';
import { sleep } from '../transport/deadline.ts';

import { CLI } from './cli-entry.ts';

export const GUEST_WORKLOADS = ['text', 'audio', 'movie', 'idle'] as const;
/** 1 Gbit/s in bytes/s: the fallback shaper's rate and QEMU's cap on loopback. */
export const GIGABIT = 125_000_000;
export { QEMU_2012_DEFAULT_BANDWIDTH, UNCAPPED_BANDWIDTH };

export interface QemuBenchOptions {
  readonly workloads: readonly string[];
  readonly reps: number;
  /** Guest RAM, bytes (whole MiB). */
  readonly memBytes: number;
  /** How long presync runs before launch; the stock guest runs as long before its migrate. */
  readonly presyncForMs: number;
  /** 'auto': namespaces if they can be made, else the shaper. */
  readonly link: 'netns' | 'shaper' | 'auto';
  /** QEMU's max-bandwidth for the stock runs; default uncapped (on the shaper fallback: 1 Gbit/s). */
  readonly stockBandwidthBytesPerSec?: number;
  readonly accel?: Accel;
  /** presync's policy (`presync qemu migrate --policy`); default 'presync' (prediction + slow start). */
  readonly policy?: string;
  /** Kernel and initrd of the test guest; default: built by scripts/build-guest.sh. */
  readonly guest?: { kernel: string; initrd: string; initrdApps?: string };
  /** Human-readable progress, one line each. */
  readonly onProgress?: (line: string) => void;
  /** Runs per kind to do before the measured ones (discarded). Default 0. */
  readonly warmup?: number;
}

export type RunKind = 'presync' | 'stock';

export interface QemuBenchRun {
  readonly workload: string;
  readonly kind: RunKind;
  readonly rep: number;
  readonly outcome: 'done' | 'rolled-back' | 'in-doubt' | 'failed';
  readonly error: { code: string; message: string } | null;
  /** Launch command → guest running on the target, ms. */
  readonly launchToRunningMs: number | null;
  /** Source STOP event → target RESUME event (QMP timestamps), ms. */
  readonly downtimeMs: number | null;
  /** QEMU's own downtime figure from query-migrate, ms. */
  readonly qemuDowntimeMs: number | null;
  /** Bytes on the wire for the whole migration (presync: presync + final + QEMU's device-state stream). */
  readonly bytes: number;
  readonly presyncBytes: number;
  readonly finalBytes: number;
  readonly qemuStreamBytes: number;
  readonly guest: ContinuityVerdict | null;
  /** Extra figures (presync: switchover step timings; stock: iterations…). */
  readonly detail: Record<string, number | string | boolean | null>;
  readonly series: ResultRun['series'];
}

export interface QemuBenchWorkloadSummary {
  workload: string;
  presyncLaunchToRunningMsMedian: number | null;
  stockLaunchToRunningMsMedian: number | null;
  /** stock ÷ presync, launch → running. */
  ratio: number | null;
  presyncDowntimeMsMedian: number | null;
  stockDowntimeMsMedian: number | null;
  presyncBytesMedian: number | null;
  stockBytesMedian: number | null;
  /** Every presync migration of this workload succeeded and its guest continued on the target. */
  guestOk: boolean;
  /**
   * The same for stock QEMU's migrations: the baseline's own result, reported
   * beside presync's rather than folded into it (under TCG, QEMU 7.2's
   * pre-copy has been seen to hand over a guest that then failed its check).
   */
  stockGuestOk: boolean;
}

export interface QemuBenchResult {
  readonly link: { kind: 'netns' | 'shaper'; description: string };
  readonly options: { reps: number; memBytes: number; presyncForMs: number; stockBandwidthBytesPerSec: number; accel: Accel; policy: string; workloads: readonly string[] };
  readonly runs: QemuBenchRun[];
  readonly workloads: QemuBenchWorkloadSummary[];
}

/** Where the two ends live and how they reach each other. */
interface Placement {
  kind: 'netns' | 'shaper';
  description: string;
  sourcePrefix: string[];
  targetPrefix: string[];
  targetHost: string;
  close(): void;
}

function placement(want: QemuBenchOptions['link']): Placement {
  const loopback = (why: string): Placement => ({
    kind: 'shaper',
    description: `loopback with presync's token-bucket shaper at 1 Gbit/s and QEMU max-bandwidth ${GIGABIT} B/s${why ? ` (${why})` : ''}`,
    sourcePrefix: [],
    targetPrefix: [],
    targetHost: '127.0.0.1',
    close: () => undefined,
  });
  if (want === 'shaper') return loopback('');
  const why = netnsUnavailable();
  let link: ShapedLink | undefined;
  let failure = why;
  if (!why) {
    try {
      link = createShapedLink({ rate: '1gbit' });
    } catch (e) {
      failure = (e as Error).message;
    }
  }
  if (!link) {
    if (want === 'netns') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--link netns: cannot create network namespaces: ${failure}; use --link shaper`);
    return loopback(`network namespaces unavailable: ${failure}`);
  }
  const l = link;
  return {
    kind: 'netns',
    description: l.description,
    sourcePrefix: l.exec(l.nsA),
    targetPrefix: l.exec(l.nsB),
    targetHost: l.addrB,
    close: () => l.close(),
  };
}

export function median(xs: readonly (number | null)[]): number | null {
  const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

const round1 = (x: number | null): number | null => (x === null ? null : Math.round(x * 10) / 10);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export function summarize(workloads: readonly string[], runs: readonly QemuBenchRun[]): QemuBenchWorkloadSummary[] {
  return workloads.map((w) => {
    const of = (k: RunKind) => runs.filter((r) => r.workload === w && r.kind === k);
    const ok = (r: QemuBenchRun) => r.outcome === 'done';
    const p = of('presync').filter(ok);
    const s = of('stock').filter(ok);
    const pl = median(p.map((r) => r.launchToRunningMs));
    const sl = median(s.map((r) => r.launchToRunningMs));
    return {
      workload: w,
      presyncLaunchToRunningMsMedian: round1(pl),
      stockLaunchToRunningMsMedian: round1(sl),
      ratio: pl !== null && sl !== null && pl > 0 ? Math.round((sl / pl) * 100) / 100 : null,
      presyncDowntimeMsMedian: round1(median(p.map((r) => r.downtimeMs))),
      stockDowntimeMsMedian: round1(median(s.map((r) => r.downtimeMs))),
      presyncBytesMedian: median(p.map((r) => r.bytes)),
      stockBytesMedian: median(s.map((r) => r.bytes)),
      guestOk: of('presync').length > 0 && of('presync').every((r) => ok(r) && r.guest?.ok === true),
      stockGuestOk: of('stock').length > 0 && of('stock').every((r) => ok(r) && r.guest?.ok === true),
    };
  });
}


interface RunContext {
  readonly dir: string;
  readonly shm: string;
  readonly where: Placement;
  readonly spec: (workload: string, ram: 'file' | 'anonymous', name: string) => MachineSpec;
  readonly o: QemuBenchOptions;
  readonly stockBandwidth: number;
  readonly secretFile: string;
}

/** Boot to the guest's first OK: its buffer is written and checked once. */
/** The test guest's real programs (test-guest/apps/README.md) are workloads too: `sort`, `sqlite`, … */
function isApp(w: string): boolean {
  return (GUEST_APPS as readonly string[]).includes(w);
}

async function waitHealthy(vm: Vm, workload: string): Promise<void> {
  // A real program's first check comes after boot and its input is made (tens of seconds under TCG).
  if (isApp(workload)) await vm.serial.waitForLine(new RegExp(`^APP ${workload} `), 240_000);
  else await vm.serial.waitForLine(/^OK (\d+)/, 90_000);
}

/** The source's last progress mark: the workload's heartbeat, or a real program's check line. */
function lastMark(serial: SerialLog, workload: string): Promise<number> {
  return isApp(workload) ? lastAppProgress(serial, workload) : lastHeartbeat(serial);
}

function continuity(target: SerialLog, source: SerialLog, workload: string, last: number): Promise<ContinuityVerdict> {
  return isApp(workload) ? checkAppContinuity(target, source, workload, last) : checkContinuity(target, source, last);
}


function failedRun(workload: string, kind: RunKind, rep: number, e: unknown, guest: ContinuityVerdict | null = null): QemuBenchRun {
  const err = toPresyncError(e);
  return {
    workload, kind, rep, outcome: 'failed', error: { code: err.code, message: err.message },
    launchToRunningMs: null, downtimeMs: null, qemuDowntimeMs: null, bytes: 0, presyncBytes: 0, finalBytes: 0, qemuStreamBytes: 0,
    guest, detail: {}, series: [],
  };
}

async function presyncRun(ctx: RunContext, workload: string, rep: number): Promise<QemuBenchRun> {
  const name = `p-${workload}-${rep}`;
  const spec = ctx.spec(workload, 'file', `${name}-src`);
  const presyncQmp = join(ctx.dir, `${name}-src.qmp-presync`);
  const dstRam = join(ctx.shm, `${name}-dst.ram`);
  const dstSerialPath = join(ctx.dir, `${name}-dst.serial`);
  const outFile = join(ctx.dir, `${name}.result.json`);
  let src: Vm | undefined;
  let serve: JsonChild | undefined;
  let migrate: JsonChild | undefined;
  let targetPid: number | null = null;
  let dstSerial: SerialLog | undefined;
  try {
    src = await launchVm({
      ...spec,
      qmpSocket: join(ctx.dir, `${name}-src.qmp`),
      serialLog: join(ctx.dir, `${name}-src.serial`),
      commandPrefix: ctx.where.sourcePrefix,
      extraArgs: ['-qmp', `unix:${presyncQmp.replaceAll(',', ',,')},server=on,wait=off`],
    });
    await waitHealthy(src, workload);
    const mib = `${ctx.o.memBytes / 2 ** 20}M`;
    serve = new JsonChild(
      [...ctx.where.targetPrefix, process.execPath, CLI, 'qemu', 'serve', '--listen', `${ctx.where.targetHost}:0`, '--image', dstRam, '--secret-file', ctx.secretFile,
        '--qemu-listen', `${ctx.where.targetHost}:0`, '--kernel', spec.kernel, '--initrd', spec.initrd!, '--append', spec.append!, '--memory', mib,
        '--machine', spec.machine!, '--accel', spec.accel ?? 'tcg', '--serial', dstSerialPath, '--json'],
      'presync qemu serve',
    );
    const listening = await serve.next((l) => l.event === 'listening', 60_000, 'listening line');
    migrate = new JsonChild(
      [...ctx.where.sourcePrefix, process.execPath, CLI, 'qemu', 'migrate', '--qmp', presyncQmp, '--to', `${ctx.where.targetHost}:${String(listening.port)}`,
        '--qemu-uri', String(listening.qemuUri), '--secret-file', ctx.secretFile, '--launch-after', `${ctx.o.presyncForMs}ms`, '--json', '--out', outFile, '--policy', ctx.o.policy ?? 'presync',
        ...(ctx.where.kind === 'shaper' ? ['--bandwidth', '1gbit'] : [])],
      'presync qemu migrate',
    );
    const code = await migrate.wait(ctx.o.presyncForMs + 180_000);
    const result = migrate.lines.at(-1);
    if (!result || result.outcome === undefined) throw new PresyncError(ErrorCodes.INTERNAL, `presync qemu migrate exited (code ${code}) without a result: ${migrate.stderrTail}`);
    const q = (result.qemu ?? {}) as JsonRecord;
    const base = {
      workload, kind: 'presync' as const, rep,
      presyncBytes: num(result.presyncBytes) ?? 0,
      finalBytes: num(result.finalBytes) ?? 0,
      qemuStreamBytes: num(q.transferredBytes) ?? 0,
    };
    let series: ResultRun['series'] = [];
    try {
      series = readResults(outFile).runs[0]?.series ?? [];
    } catch {
      /* a failed run may not have written it */
    }
    if (result.outcome !== 'done') {
      const err = (result.error ?? { code: 'PRESYNC_ERR_INTERNAL', message: 'no error reported' }) as { code: string; message: string };
      return { ...failedRun(workload, 'presync', rep, new PresyncError(ErrorCodes.INTERNAL, `${err.code}: ${err.message}`)), ...base, outcome: result.outcome as QemuBenchRun['outcome'], error: err, series };
    }
    const handed = await serve.next((l) => l.event === 'handed-over', 30_000, 'handed-over line');
    targetPid = num(handed.pid);
    await src.exited;
    const lastSrc = await lastMark(src.serial, workload);
    dstSerial = new SerialLog(dstSerialPath);
    const guest = await continuity(dstSerial, src.serial, workload, lastSrc);
    const stopAt = num(q.sourceStopAtMs);
    const resumedAt = num(handed.resumedAtMs);
    return {
      ...base,
      outcome: 'done',
      error: null,
      launchToRunningMs: num(result.launchToRunningMs),
      downtimeMs: stopAt !== null && resumedAt !== null ? Math.round((resumedAt - stopAt) * 10) / 10 : null,
      qemuDowntimeMs: num(q.downtimeMs),
      bytes: base.presyncBytes + base.finalBytes + base.qemuStreamBytes,
      guest,
      detail: {
        ...switchoverBreakdown(result, series),
        engineDowntimeMs: num(result.engineDowntimeMs),
        residualPagesAtLaunch: num(result.residualPagesAtLaunch),
        liveRounds: num(result.liveRounds),
        verified: result.verified === true,
      },
      series,
    };
  } catch (e) {
    return failedRun(workload, 'presync', rep, e);
  } finally {
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
    await dstSerial?.close();
    await src?.dispose().catch(() => undefined);
    // A target QEMU still waiting (failed run) is stopped by serve; its RAM file is ours to remove.
    for (const f of [dstRam, metaPath(dstRam), spec.ram.kind === 'file' ? spec.ram.memPath : '']) if (f) rmSync(f, { force: true });
  }
}

/**
 * Where a presync launch→running went, from the engine's phase times and
 * QEMU's step times (ms): waiting for the running epoch to end, live rounds,
 * QEMU reaching pre-switchover (vCPUs stop), the final full scan plus the
 * residual, digest verification, QEMU's device-state stream, and the target
 * confirming that its QEMU runs.
 */
export function switchoverBreakdown(result: JsonRecord, series: ResultRun['series'] = []): Record<string, number | null> {
  const at = (result.phaseAtMs ?? {}) as Record<string, unknown>;
  const q = (result.qemu ?? {}) as JsonRecord;
  const d = (a: string, b: string): number | null => {
    const x = num(at[a]);
    const y = num(at[b]);
    return x !== null && y !== null ? Math.round((y - x) * 10) / 10 : null;
  };
  const minus = (a: number | null, b: number | null): number | null => (a !== null && b !== null ? Math.round((a - b) * 10) / 10 : null);
  const launchedToDone = d('launched', 'done');
  const toPre = num(q.migrateToPreSwitchoverMs);
  const device = num(q.continueToCompletedMs);
  // The fresh-first watch (fresh-first.ts), if the policy ran one: its last step's diagnostics.
  let freshWatchMs: number | null = null;
  let aheadOfPausePages: number | null = null;
  for (const p of series) {
    const diag = p.diag ?? {};
    if (p.phase !== 'launched' || diag.freshState === undefined) continue;
    freshWatchMs = diag.waitedMs ?? freshWatchMs;
    aheadOfPausePages = diag.freshState === 0 ? 0 : (aheadOfPausePages ?? 0) + p.sentPages;
  }
  return {
    launchWaitMs: minus(num(result.launchToRunningMs), launchedToDone),
    liveRoundsMs: d('launched', 'final-copy'),
    freshWatchMs,
    aheadOfPausePages,
    migrateToPreSwitchoverMs: toPre === null ? null : Math.round(toPre * 10) / 10,
    migrateToStopMs: num(q.migrateToStopMs),
    // From the moment the guest was paused and the policy had switched over (a pause started
    // early, during the fresh-first probes, may have taken effect before the switchover).
    finalScanAndResidualMs: num(at.paused) !== null && num(at['final-copy']) !== null && num(at.verify) !== null
      ? Math.round((num(at.verify)! - Math.max(num(at.paused)!, num(at['final-copy'])!)) * 10) / 10
      : minus(d('final-copy', 'verify'), toPre),
    verifyMs: minus(d('verify', 'handover'), device),
    deviceStateMs: device === null ? null : Math.round(device * 10) / 10,
    targetStartConfirmMs: d('handover', 'done'),
  };
}

async function stockRun(ctx: RunContext, workload: string, rep: number): Promise<QemuBenchRun> {
  const name = `s-${workload}-${rep}`;
  const spec = ctx.spec(workload, 'anonymous', `${name}-src`);
  let src: Vm | undefined;
  let dst: Vm | undefined;
  try {
    src = await launchVm({ ...spec, qmpSocket: join(ctx.dir, `${name}-src.qmp`), serialLog: join(ctx.dir, `${name}-src.serial`), commandPrefix: ctx.where.sourcePrefix });
    dst = await launchVm(
      matchingTargetOptions(spec, {
        memPath: '', qmpSocket: join(ctx.dir, `${name}-dst.qmp`), serialLog: join(ctx.dir, `${name}-dst.serial`), commandPrefix: ctx.where.targetPrefix,
      }),
    );
    await waitHealthy(src, workload);
    // The stock guest runs as long before its launch as the presync guest did.
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
    try {
      r = await stockMigrate(src.qmp, dst.qmp, { maxBandwidthBytesPerSec: ctx.stockBandwidth, listenUri: `tcp:${ctx.where.targetHost}:0`, timeoutMs: 300_000 });
    } finally {
      offStop();
      offResume();
    }
    const lastSrc = await lastMark(src.serial, workload);
    const guest = await continuity(dst.serial, src.serial, workload, lastSrc);
    const downtime = stopAt !== null && resumedAt !== null ? Math.round(((resumedAt as number) - (stopAt as number)) * 10) / 10 : null;
    return {
      workload, kind: 'stock', rep, outcome: 'done', error: null,
      launchToRunningMs: Math.round(r.launchToRunningMs * 10) / 10,
      downtimeMs: downtime,
      qemuDowntimeMs: r.downtimeMs,
      bytes: r.transferredBytes,
      presyncBytes: 0,
      finalBytes: r.transferredBytes,
      qemuStreamBytes: r.transferredBytes,
      guest,
      detail: { iterations: r.iterations, totalTimeMs: r.totalTimeMs, setupTimeMs: r.setupTimeMs, mbps: r.mbps, ramTotal: r.ramTotal, maxBandwidthBytesPerSec: ctx.stockBandwidth },
      series: [],
    };
  } catch (e) {
    return failedRun(workload, 'stock', rep, e);
  } finally {
    await dst?.dispose().catch(() => undefined);
    await src?.dispose().catch(() => undefined);
  }
}

export async function runQemuBench(o: QemuBenchOptions): Promise<QemuBenchResult> {
  for (const w of o.workloads) {
    if (!(GUEST_WORKLOADS as readonly string[]).includes(w) && !isApp(w)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `unknown guest workload "${w}"; known: ${[...GUEST_WORKLOADS, ...GUEST_APPS].join(', ')}`);
  }
  if (!Number.isSafeInteger(o.reps) || o.reps < 1) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `reps must be a positive integer, got ${o.reps}`);
  if (!Number.isSafeInteger(o.memBytes) || o.memBytes < 64 * 2 ** 20 || o.memBytes % 2 ** 20 !== 0) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `memory must be a whole number of MiB, at least 64M, got ${o.memBytes} B`);
  }
  const apps = o.workloads.some(isApp);
  const guest = o.guest ?? buildTestGuest({ apps });
  if (apps && !guest.initrdApps) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'the real programs need the guest built with them (scripts/build-guest.sh --apps)');
  const where = placement(o.link);
  const say = o.onProgress ?? (() => undefined);
  say(`link: ${where.kind}: ${where.description}`);
  const stockBandwidth = Math.round(Math.min(o.stockBandwidthBytesPerSec ?? UNCAPPED_BANDWIDTH, where.kind === 'shaper' ? GIGABIT : Infinity));
  const dir = mkdtempSync(join(tmpdir(), 'presync-qemu-bench-'));
  const shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'presync-qemu-bench-'));
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, `qemu-bench-${process.pid}-${Date.now()}-secret\n`, { mode: 0o600 });
  const memMiB = o.memBytes / 2 ** 20;
  // The workload's buffer: a quarter of RAM (64 MiB of a 256 MiB guest), the rest is kernel and free memory.
  const guestMem = `${Math.max(16, Math.floor(memMiB / 4))}M`;
  const ctx: RunContext = {
    dir, shm, where, o, stockBandwidth, secretFile,
    spec: (workload, ram, name) => ({
      memBytes: o.memBytes,
      ram: ram === 'file' ? { kind: 'file', memPath: join(shm, `${name}.ram`) } : { kind: 'anonymous' },
      kernel: guest.kernel,
      initrd: isApp(workload) ? guest.initrdApps! : guest.initrd,
      append: isApp(workload) ? `console=ttyS0 quiet panic=-1 presync.app=${workload}` : `console=ttyS0 quiet panic=-1 presync.mem=${guestMem} presync.workload=${workload}`,
      machine: 'pc-i440fx-7.2',
      accel: o.accel ?? 'tcg',
    }),
  };
  const runs: QemuBenchRun[] = [];
  try {
    for (const w of o.workloads) {
      for (let rep = -(o.warmup ?? 0); rep < o.reps; rep++) {
        // Alternate the order so neither kind always runs on a warmer machine.
        const order: RunKind[] = rep % 2 === 0 ? ['presync', 'stock'] : ['stock', 'presync'];
        for (const kind of order) {
          const r = kind === 'presync' ? await presyncRun(ctx, w, rep) : await stockRun(ctx, w, rep);
          say(describeRun(r) + (rep < 0 ? ' (warm-up, discarded)' : ''));
          if (rep >= 0) runs.push(r);
        }
      }
    }
  } finally {
    where.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  }
  return {
    link: { kind: where.kind, description: where.description },
    options: { reps: o.reps, memBytes: o.memBytes, presyncForMs: o.presyncForMs, stockBandwidthBytesPerSec: stockBandwidth, accel: o.accel ?? 'tcg', policy: o.policy ?? 'presync', workloads: [...o.workloads] },
    runs,
    workloads: summarize(o.workloads, runs),
  };
}

export function describeRun(r: QemuBenchRun): string {
  const head = `${r.workload} #${r.rep + 1} ${r.kind}`;
  if (r.outcome !== 'done') return `${head}: ${r.outcome}: ${r.error?.code}: ${r.error?.message}`;
  const extra = r.kind === 'presync'
    ? `; ${r.detail.residualPagesAtLaunch} pages stale at launch; wait ${r.detail.launchWaitMs} + live rounds (${r.detail.liveRounds}) ${r.detail.liveRoundsMs}` +
      (r.detail.freshWatchMs !== null && r.detail.freshWatchMs !== undefined ? ` (fresh-first watch ${r.detail.freshWatchMs}, ${r.detail.aheadOfPausePages} pages sent ahead of the pause)` : '') +
      ` + pre-switchover ${r.detail.migrateToPreSwitchoverMs} (vCPUs ran ${r.detail.migrateToStopMs}) + ` +
      `final scan & residual ${r.detail.finalScanAndResidualMs} + verify ${r.detail.verifyMs} + ` +
      `device state ${r.detail.deviceStateMs} + target start ${r.detail.targetStartConfirmMs} ms`
    : `, ${r.detail.iterations} rounds`;
  return `${head}: launch→running ${r.launchToRunningMs} ms, downtime ${r.downtimeMs} ms (QEMU says ${r.qemuDowntimeMs}), ${(r.bytes / 2 ** 20).toFixed(1)} MiB${extra}; guest ${r.guest?.ok ? 'OK' : `NOT OK: ${r.guest?.reason}`}`;
}

/** The one-line JSON the bench ends with (`--json`). */
export function qemuBenchJson(res: QemuBenchResult): Record<string, unknown> {
  return {
    workloads: res.workloads.map((w) => ({
      workload: w.workload,
      presyncLaunchToRunningMsMedian: w.presyncLaunchToRunningMsMedian,
      stockLaunchToRunningMsMedian: w.stockLaunchToRunningMsMedian,
      ratio: w.ratio,
      presyncDowntimeMsMedian: w.presyncDowntimeMsMedian,
      stockDowntimeMsMedian: w.stockDowntimeMsMedian,
      presyncBytesMedian: w.presyncBytesMedian,
      stockBytesMedian: w.stockBytesMedian,
      guestOk: w.guestOk,
      stockGuestOk: w.stockGuestOk,
    })),
    link: res.link.kind,
    linkDescription: res.link.description,
    reps: res.options.reps,
    memBytes: res.options.memBytes,
    presyncForMs: res.options.presyncForMs,
    policy: res.options.policy,
    stockBandwidthBytesPerSec: res.options.stockBandwidthBytesPerSec,
  };
}

/**
 * One migration of a QEMU bench as a results run (stock runs under policy
 * `qemu-stock`); `extra` adds a bench's own figures to the summary, before
 * the run's detail.
 */
export function benchRunRecord(r: QemuBenchRun, o: { policy: string; presyncForMs: number }, labelPrefix = '', extra: Record<string, unknown> = {}): ResultRun {
  const policy = r.kind === 'presync' ? o.policy : 'qemu-stock';
  return {
    label: `${labelPrefix}${r.workload} · ${policy} #${r.rep + 1}`,
    workload: r.workload,
    policy,
    seed: null,
    shell: 'real',
    launchAtMs: r.kind === 'presync' ? o.presyncForMs : 0,
    summary: {
      outcome: r.outcome === 'failed' ? 'rolled-back' : r.outcome,
      error: r.error,
      launchToRunningMs: r.launchToRunningMs,
      downtimeMs: r.downtimeMs,
      presyncBytes: r.presyncBytes,
      finalBytes: r.finalBytes,
      // presync checks every page's digest; stock QEMU verifies nothing.
      verified: r.kind === 'presync' && r.detail.verified === true,
      guestOk: r.guest?.ok === true,
      guestCheck: r.guest?.reason || 'ok',
      ...(r.guest?.targetConsoleTail ? { guestConsoleTail: r.guest.targetConsoleTail.join('\n') } : {}),
      qemuDowntimeMs: r.qemuDowntimeMs,
      qemuStreamBytes: r.qemuStreamBytes,
      bytes: r.bytes,
      ...extra,
      ...r.detail,
    },
    series: r.series,
  };
}

/** `presync-results/1` of kind qemu-bench: one run per migration (stock runs under policy `qemu-stock`) and the medians table. */
export function qemuBenchResults(res: QemuBenchResult, createdBy: string): ResultsFile {
  const runs: ResultRun[] = res.runs.map((r) => benchRunRecord(r, res.options));
  return makeResults({
    kind: 'qemu-bench',
    createdBy,
    params: { link: res.link.kind, linkDescription: res.link.description, ...res.options },
    runs,
    table: res.workloads.map((w) => ({ ...w })),
  });
}
