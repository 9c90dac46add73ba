import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { createPolicy, policyNames } from '../../core/policies/registry.ts';
import { ControlServer } from '../../engine/control.ts';
import { SourceMigration, type MigrationResult } from '../../engine/source-session.ts';
import { recoverStaleLock, SourceLock } from '../../engine/source-lock.ts';
import { ImageOnlyController, ProcessController, processStartTime, processState } from '../../guest/controller.ts';
import { RamImageReader } from '../../guest/ram-image.ts';
import { formatMigrationProgress, MigrationProgressTracker, progressEvent } from '../../lab/progress.ts';
import { makeResults, writeResults } from '../../lab/results.ts';
import { runRecord } from '../../lab/results-build.ts';
import { intFlag, parseFlags } from '../args.ts';
import { TRANSPORT_FLAGS, addressFlag, durationFlag, jsonLine, readSecret, transportFromFlags } from '../common.ts';
import type { CommandIO } from '../io.ts';
import { migrationExitCode, rollbackOnSignals } from '../migration-exit.ts';

/** `--scan`: how presync epochs look for dirty pages (see MigrateOptions.scan). */
export function scanFlag(v: string): 'auto' | 'full' | 'incremental' {
  if (v === 'auto' || v === 'full' || v === 'incremental') return v;
  throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--scan must be auto, full or incremental, got "${v}"`);
}

const USAGE =
  'presync migrate --image PATH --to HOST:PORT --secret-file F (--pid PID | --offline) [--policy NAME] [--bandwidth RATE] ' +
  '[--launch-after DURATION | --control SOCKET] [--epoch DURATION] [--codec none|deflate|lz4] [--streams N] [--scan auto|full|incremental] [--downtime-limit DURATION] [--image-id ID] [--out FILE] [--json]\n' +
  '       presync migrate --image PATH --recover   (resume a guest that a dead source agent left paused)';

/** The fields `--json` prints, in this order (issue #3's contract). */
export function resultJson(r: MigrationResult): Record<string, unknown> {
  return {
    outcome: r.outcome,
    error: r.error,
    launchToRunningMs: r.launchToRunningMs === null ? null : Math.round(r.launchToRunningMs * 10) / 10,
    downtimeMs: r.downtimeMs === null ? null : Math.round(r.downtimeMs * 10) / 10,
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

export async function migrateCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      image: { type: 'string' },
      to: { type: 'string' },
      'secret-file': { type: 'string' },
      policy: { type: 'string' },
      pid: { type: 'string' },
      offline: { type: 'boolean' },
      'launch-after': { type: 'string' },
      control: { type: 'string' },
      epoch: { type: 'string' },
      streams: { type: 'string' },
      scan: { type: 'string' },
      codec: { type: 'string' },
      'downtime-limit': { type: 'string' },
      'image-id': { type: 'string' },
      'page-size': { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
      recover: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      ...TRANSPORT_FLAGS,
    },
    USAGE,
  );
  if (values.help) {
    io.out(`${USAGE}\n\nThe source agent: pre-synchronizes --image to the target until launch, then pauses the guest (--pid: SIGSTOP), copies the rest, verifies and hands over.\nPolicies: ${policyNames().join(', ')} (default presync).\n`);
    return 0;
  }
  if (!values.image) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--image PATH is required\nusage: ${USAGE}`);
  if (values.recover) {
    const rep = recoverStaleLock(values.image);
    if (values.json) io.out(jsonLine({ event: 'recover', action: rep.action, guestPid: rep.record?.guestPid ?? null, state: rep.record?.state ?? null }));
    else io.out(`recover: ${rep.action}${rep.record?.guestPid ? ` (guest pid ${rep.record.guestPid}, left ${rep.record.state})` : ''}\n`);
    if (rep.action === 'held') {
      const who = rep.record && rep.record.agentPid > 0 ? ` (pid ${rep.record.agentPid})` : '';
      throw new PresyncError(ErrorCodes.LOCKED, `${values.image} is being migrated by a live agent${who}; nothing to recover`);
    }
    return 0;
  }
  if (values['launch-after'] === undefined && values.control === undefined) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `say when to launch: --launch-after DURATION, or --control SOCKET and "presync launch --control SOCKET"\nusage: ${USAGE}`);
  }
  const codec = values.codec ?? 'none';
  if (codec !== 'none' && codec !== 'deflate' && codec !== 'lz4') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--codec must be none, deflate or lz4, got "${codec}"`);
  const to = addressFlag(values.to, 'to');
  const secret = readSecret(values['secret-file']);
  const { transport, bandwidthBytesPerSec } = transportFromFlags(values);
  const pageSize = intFlag(values['page-size'], 'page-size', 4096, 512, 1 << 21);
  const launchAfter = durationFlag(values['launch-after'], 'launch-after');
  const epochMs = durationFlag(values.epoch, 'epoch') ?? 100;
  const downtimeLimitMs = durationFlag(values['downtime-limit'], 'downtime-limit');
  const guestPid = guestPidFlag(values.pid, values.offline === true);
  const inner = guestPid !== undefined ? new ProcessController(guestPid) : new ImageOnlyController();
  // Geometry comes from the image itself; open once to validate before connecting.
  const probe = RamImageReader.open(values.image, pageSize);
  const geometry = probe.geometry;
  probe.close();
  const policy = createPolicy(values.policy ?? 'presync', { geometry, seed: 1 }, downtimeLimitMs !== undefined ? { downtimeLimitMs } : {});
  // One migration per guest; a lock left by a dead agent is recovered (its paused guest resumed) first.
  // The lineage id names this migration's copy of the guest for its whole life (kept in the lock).
  const lineageId = randomBytes(16).toString('hex');
  const lock = SourceLock.acquire(values.image, { ...(guestPid !== undefined ? { guestPid } : {}), lineageId });
  const controller = lock.guard(inner);

  // Progress: --json prints one event per line (progress at most once a second);
  // a terminal gets one line redrawn in place; anything else a line a second.
  const tracker = new MigrationProgressTracker(downtimeLimitMs !== undefined ? { readyDowntimeMs: downtimeLimitMs } : {});
  const tty = !values.json && process.stderr.isTTY === true;
  let lastProgress = Number.NEGATIVE_INFINITY;
  let drawn = false;
  const note = (text: string): void => {
    io.err(`${drawn ? '\n' : ''}presync: ${text}\n`);
    drawn = false;
  };
  const m = new SourceMigration({
    transport,
    to,
    secret,
    imagePath: values.image,
    pageSize,
    ...(values['image-id'] ? { imageId: values['image-id'] } : {}),
    policy,
    controller,
    epochMs,
    codec,
    streams: intFlag(values.streams, 'streams', 1, 1, 16),
    ...(values.scan !== undefined ? { scan: scanFlag(values.scan) } : {}),
    ...(bandwidthBytesPerSec !== undefined ? { bandwidthBytesPerSec } : {}),
    onEvent: (e) => {
      if (e.event === 'progress') {
        const p = tracker.update(e.status);
        if (e.status.elapsedMs - lastProgress < (tty ? 250 : 1000)) return;
        lastProgress = e.status.elapsedMs;
        if (values.json) io.out(jsonLine(progressEvent(e.status, p)));
        else if (tty) {
          io.err(`\rpresync: ${formatMigrationProgress(p)}\x1b[K`);
          drawn = true;
        } else io.err(`presync: ${formatMigrationProgress(p)}\n`);
        return;
      }
      if (values.json) io.out(jsonLine(e));
      else if (e.event === 'phase') note(`phase ${e.phase}`);
      else if (e.event === 'disconnected') note(`connection lost (${e.error.code}); reconnecting`);
      else if (e.event === 'connected' && e.attempt > 0) note(`reconnected, ${e.stalePages} pages to resend`);
    },
  });
  let control: ControlServer | undefined;
  let r: MigrationResult | undefined;
  const signals = rollbackOnSignals(m, { note, resumeGuest: () => controller.resume(), handoverBegan: () => lock.current === 'committed' });
  let forced = false;
  try {
    if (values.control) {
      control = await ControlServer.listen(values.control, {
        launch: () => {
          m.launch();
          return { launched: true, ...m.currentStatus() };
        },
        status: () => ({ ...m.currentStatus(), launched: m.launched }),
      });
    }
    const timer = launchAfter !== undefined ? setTimeout(() => m.launch(), launchAfter) : undefined;
    try {
      r = await Promise.race([m.run(), signals.forced.then((x) => ((forced = true), x))]);
    } finally {
      if (timer) clearTimeout(timer);
      await control?.close();
    }
  } finally {
    signals.dispose();
    // In doubt, the lock stays (state committed) so no later agent resumes a guest the target may run.
    lock.release({ keepIfCommitted: r === undefined || r.outcome === 'in-doubt' });
  }
  if (drawn) io.err('\n');
  if (values.out) {
    const workload = basename(values.image);
    writeResults(
      values.out,
      makeResults({
        kind: 'migration',
        createdBy: `presync migrate ${argv.join(' ')}`,
        params: { image: values.image, policy: policy.name, epochMs, codec, pageSize, pageCount: geometry.pageCount, ...(bandwidthBytesPerSec !== undefined ? { bandwidthBytesPerSec } : {}) },
        runs: [runRecord('real', r, { label: `${workload} · ${policy.name} (real)`, workload, policy: policy.name, seed: null })],
      }),
    );
  }
  if (values.json) io.out(jsonLine(resultJson(r)));
  else {
    const j = resultJson(r);
    io.out(
      r.outcome === 'done'
        ? `migrated: launch→running ${j.launchToRunningMs} ms, downtime ${j.downtimeMs} ms, presync ${r.presyncBytes} B, final ${r.finalBytes} B, residual at launch ${r.residualPagesAtLaunch} pages, verified\n`
        : `${r.outcome}: ${r.error?.code}: ${r.error?.message}\n`,
    );
  }
  const code = migrationExitCode(r);
  // The engine did not finish after a second signal: whatever it still holds must not keep the process alive.
  if (forced) setTimeout(() => process.exit(code), 200).unref();
  return code;
}

/**
 * `--pid` names the process that writes the image (paused at the switchover,
 * killed after the handover); `--offline` says nothing does. One of them is
 * required: without a pid the application would run on after its copy
 * started on the target. The pid must exist now.
 */
export function guestPidFlag(pid: string | undefined, offline: boolean): number | undefined {
  if (pid === undefined && !offline) {
    throw new PresyncError(
      ErrorCodes.BAD_ARGUMENT,
      'say what writes the image: --pid PID (the application, paused at the switchover and stopped after the handover), or --offline if nothing writes it',
    );
  }
  if (pid !== undefined && offline) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, '--pid and --offline contradict each other: --offline says nothing writes the image');
  if (pid === undefined) return undefined;
  const n = intFlag(pid, 'pid', 0, 2);
  const st = processState(n);
  if (processStartTime(n) === null || st === null || st === 'Z' || st === 'X') {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--pid ${n}: there is no process ${n}; give the pid of the application that writes the image`);
  }
  return n;
}
