import { basename } from 'node:path';
import { migrate, resultSummary, type Migration, type ResultSummary } from '../../api/migrate.ts';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { policyNames } from '../../core/policies/registry.ts';
import type { MigrationResult } from '../../engine/source-session.ts';
import { recoverStaleLock } from '../../engine/source-lock.ts';
import { formatBytes, formatMigrationProgress } from '../progress.ts';
import { makeResults, runRecord, writeResults, type ResultRun } from '../../engine/results-file.ts';
import { intFlag, parseFlags } from '../args.ts';
import { addressFlag, bandwidthFlag, durationFlag, jsonLine, readSecret, tlsFromFlags, TRANSPORT_FLAGS } from '../common.ts';
import type { CommandIO } from '../io.ts';
import { EXIT_CODES } from '../exit-codes.ts';
import { migrationExitCode, rollbackOnSignals } from '../migration-exit.ts';
import { processStartTime, processState } from '../../guest/controller.ts';

/** `--scan`: how presync epochs look for dirty pages (see MigrateOptions.scan). */
export function scanFlag(v: string): 'auto' | 'full' | 'incremental' {
  if (v === 'auto' || v === 'full' || v === 'incremental') return v;
  throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--scan must be auto, full or incremental, got "${v}"`);
}

const USAGE =
  'presync migrate --image PATH --to HOST:PORT --secret-file F (--pid PID | --offline) [--policy NAME] [--bandwidth RATE] ' +
  '[--launch-after DURATION | --launch-when-ready | --control SOCKET] [--epoch DURATION] [--codec none|deflate|lz4] [--streams N] [--scan auto|full|incremental] [--downtime-limit DURATION] [--image-id ID] [--metrics HOST:PORT [--metrics-linger DURATION]] [-o|--out FILE] [--json]\n' +
  '       presync migrate --image PATH --recover   (resume a guest that a dead source agent left paused)';

const HELP = `${USAGE}

The source agent: pre-synchronizes --image to the target until launch, then pauses
the guest (--pid: SIGSTOP), copies the rest, verifies and hands over.

  --pid PID                 the application writing the image: paused at the
                            switchover, killed after the handover (required)
  --offline                 instead of --pid: nothing writes the image
  --launch-after DURATION   launch this long after the start (3s, 250ms, 1m)
  --launch-when-ready       launch once the initial copy is done and the expected
                            pause fits --downtime-limit (default 300ms)
  --control SOCKET          take "presync launch|status|abort|set --control SOCKET"
  --bandwidth RATE          send-rate limit (1gbit, 100mbit, 50MB/s); change it
                            later with "presync set --control SOCKET --bandwidth RATE"
  --metrics HOST:PORT       serve Prometheus metrics on http://HOST:PORT/metrics
  --metrics-linger DURATION keep serving them this long after the end (a last
                            scrape then sees the outcome counter)
  -o, --out FILE            write a results file for "presync report"
  --json                    one event per line on stdout: {"event":…,"ts":…}, the
                            last one {"event":"result","outcome":…}

Policies: ${policyNames().join(', ')} (default presync).

Examples:
  presync migrate --image /dev/shm/app.img --to target:7070 --secret-file secret \\
    --pid "$(pidof my-app)" --launch-after 30s
  presync migrate --image /dev/shm/app.img --to target:7070 --secret-file secret \\
    --pid "$(pidof my-app)" --control /run/presync.sock --metrics 127.0.0.1:9464 &
  presync launch --control /run/presync.sock --when-ready

${EXIT_CODES}`;

/** The fields `--json` prints in its last line, after `"event":"result"` (issue #3's contract). */
export function resultJson(r: MigrationResult): Record<string, unknown> {
  return { event: 'result', ...resultSummary(r) };
}

/** The one-line human summary of a migration's result. */
export function resultLine(r: ResultSummary): string {
  const ms = (v: number | null): string => (v === null ? '—' : `${Math.round(v * 10) / 10} ms`);
  return r.outcome === 'done'
    ? `migrated: launch→running ${ms(r.launchToRunningMs)}, downtime ${ms(r.downtimeMs)}, presync ${formatBytes(r.presyncBytes)}, final ${formatBytes(r.finalBytes)}, residual at launch ${r.residualPagesAtLaunch} pages, verified\n`
    : `${r.outcome}: ${r.error?.code}: ${r.error?.message}\n`;
}

/**
 * What `migrate` and `qemu migrate` print while a migration runs: with --json
 * every event as one line on stdout (progress at most once a second); on a
 * terminal one progress line redrawn in place on stderr; otherwise a line a
 * second. Returns a function that ends a redrawn line.
 */
export function printMigrationEvents(m: Migration, io: CommandIO, json: boolean, o: { result?: boolean } = {}): () => void {
  const tty = !json && process.stderr.isTTY === true;
  let lastProgress = Number.NEGATIVE_INFINITY;
  let lastState = '';
  let drawn = false;
  const note = (text: string): void => {
    io.err(`${drawn ? '\n' : ''}presync: ${text}\n`);
    drawn = false;
  };
  m.on('event', (e: { event: string; ts: string } & Record<string, unknown>) => {
    if (e.event === 'result') {
      if (o.result === false) return;
      if (drawn) io.err('\n');
      drawn = false;
      io.out(json ? jsonLine(e) : resultLine(e as unknown as ResultSummary));
      return;
    }
    if (e.event === 'progress') {
      const elapsed = Number(e.elapsedMs);
      // Throttled, except when the initial copy ends or readiness changes.
      const state = `${String(e.initialCopyDone)}/${String(e.ready)}`;
      if (elapsed - lastProgress < (tty ? 250 : 1000) && state === lastState) return;
      lastState = state;
      lastProgress = elapsed;
      if (json) io.out(jsonLine(e));
      else {
        const view = m.progress;
        if (!view) return;
        const line = formatMigrationProgress(view);
        if (tty) {
          io.err(`\rpresync: ${line}\x1b[K`);
          drawn = true;
        } else io.err(`presync: ${line}\n`);
      }
      return;
    }
    if (json) io.out(jsonLine(e));
    else if (e.event === 'phase') note(`phase ${String(e.phase)}`);
    else if (e.event === 'disconnected') note(`connection lost (${String((e.error as { code?: string } | undefined)?.code)}); reconnecting`);
    else if (e.event === 'connected' && Number(e.attempt) > 0) note(`reconnected, ${String(e.stalePages)} pages to resend`);
    else if (e.event === 'metrics') note(`metrics on http://${String(e.host)}:${String(e.port)}/metrics`);
    else if (e.event === 'control') note(`${String(e.cmd)} (control socket)`);
  });
  return () => {
    if (drawn) io.err('\n');
  };
}

/** When each engine phase began, ms since the migration started: the report draws its timeline from them. */
function recordPhaseTimes(m: Migration): Record<string, number> {
  const at: Record<string, number> = {};
  m.on('event', (e: { event: string; phase?: unknown; atMs?: unknown }) => {
    if (typeof e.atMs !== 'number') return;
    if (e.event === 'phase') at[String(e.phase)] = Math.round(e.atMs * 10) / 10;
    else if (e.event === 'paused') at.paused = Math.round(e.atMs * 10) / 10;
  });
  return at;
}

function withPhaseTimes(run: ResultRun, phaseAtMs: Record<string, number>): ResultRun {
  return { ...run, summary: { ...run.summary, phaseAtMs } };
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
      'launch-when-ready': { type: 'boolean' },
      control: { type: 'string' },
      epoch: { type: 'string' },
      streams: { type: 'string' },
      scan: { type: 'string' },
      codec: { type: 'string' },
      'downtime-limit': { type: 'string' },
      'image-id': { type: 'string' },
      'page-size': { type: 'string' },
      metrics: { type: 'string' },
      'metrics-linger': { type: 'string' },
      out: { type: 'string', short: 'o' },
      json: { type: 'boolean' },
      recover: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      ...TRANSPORT_FLAGS,
    },
    USAGE,
  );
  if (values.help) {
    io.out(HELP);
    return 0;
  }
  if (!values.image) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--image PATH is required\nusage: ${USAGE}`);
  if (values.recover) {
    const rep = recoverStaleLock(values.image);
    if (values.json) io.out(jsonLine({ event: 'recover', ts: new Date().toISOString(), action: rep.action, guestPid: rep.record?.guestPid ?? null, state: rep.record?.state ?? null }));
    else io.out(`recover: ${rep.action}${rep.record?.guestPid ? ` (guest pid ${rep.record.guestPid}, left ${rep.record.state})` : ''}\n`);
    if (rep.action === 'held') {
      const who = rep.record && rep.record.agentPid > 0 ? ` (pid ${rep.record.agentPid})` : '';
      throw new PresyncError(ErrorCodes.LOCKED, `${values.image} is being migrated by a live agent${who}; nothing to recover`);
    }
    return 0;
  }
  if (values['launch-after'] === undefined && values.control === undefined && values['launch-when-ready'] !== true) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `say when to launch: --launch-after DURATION, --launch-when-ready, or --control SOCKET and "presync launch --control SOCKET"\nusage: ${USAGE}`);
  }
  const codec = values.codec ?? 'none';
  if (codec !== 'none' && codec !== 'deflate' && codec !== 'lz4') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--codec must be none, deflate or lz4, got "${codec}"`);
  if (values.policy !== undefined && !policyNames().includes(values.policy)) {
    throw new PresyncError(ErrorCodes.BAD_POLICY, `--policy: unknown policy "${values.policy}"; expected one of: ${policyNames().join(', ')}`);
  }
  const to = addressFlag(values.to, 'to');
  const secret = readSecret(values['secret-file']);
  const pageSize = intFlag(values['page-size'], 'page-size', 4096, 512, 1 << 21);
  const launchAfter = durationFlag(values['launch-after'], 'launch-after');
  const epochMs = durationFlag(values.epoch, 'epoch') ?? 100;
  const downtimeLimitMs = durationFlag(values['downtime-limit'], 'downtime-limit');
  const bandwidth = bandwidthFlag(values.bandwidth);
  const guestPid = guestPidFlag(values.pid, values.offline === true);
  if (values.metrics !== undefined) addressFlag(values.metrics, 'metrics');

  const m = migrate({
    image: values.image,
    to,
    secret,
    pageSize,
    ...(guestPid !== undefined ? { pid: guestPid } : {}),
    ...(values.policy !== undefined ? { policy: values.policy } : {}),
    ...(bandwidth !== undefined ? { bandwidth } : {}),
    ...(downtimeLimitMs !== undefined ? { downtimeLimit: downtimeLimitMs } : {}),
    ...(launchAfter !== undefined ? { launchAfter } : {}),
    ...(values['launch-when-ready'] === true ? { launchWhenReady: true } : {}),
    epoch: epochMs,
    codec,
    streams: intFlag(values.streams, 'streams', 1, 1, 16),
    ...(values.scan !== undefined ? { scan: scanFlag(values.scan) } : {}),
    ...(values['image-id'] ? { imageId: values['image-id'] } : {}),
    ...(values.control !== undefined ? { control: values.control } : {}),
    ...(values.metrics !== undefined ? { metrics: values.metrics } : {}),
    ...(values['metrics-linger'] !== undefined ? { metricsLinger: durationFlag(values['metrics-linger'], 'metrics-linger')! } : {}),
    tls: tlsFromFlags(values),
  });
  const phaseAtMs = recordPhaseTimes(m);
  const endLine = printMigrationEvents(m, io, values.json === true);
  const signals = rollbackOnSignals(m, {
    note: (t) => io.err(`presync: ${t}\n`),
    resumeGuest: () => m.resumeGuestNow(),
    handoverBegan: () => m.handoverBegan,
    bytes: () => ({ presyncBytes: m.status().bytesSent, finalBytes: 0 }),
  });
  let forced = false;
  let r: MigrationResult;
  try {
    r = await Promise.race([m.result, signals.forced.then((x) => ((forced = true), x))]);
  } finally {
    signals.dispose();
  }
  endLine();
  if (values.out) {
    const workload = basename(values.image);
    const policy = m.policy?.name ?? values.policy ?? 'presync';
    writeResults(
      values.out,
      makeResults({
        kind: 'migration',
        createdBy: `presync migrate ${argv.join(' ')}`,
        params: { image: values.image, policy, epochMs, codec, pageSize, pageCount: m.status().pageCount, ...(bandwidth !== undefined ? { bandwidthBytesPerSec: bandwidth } : {}) },
        // Phase start times ride along in the summary (the schema keeps extra fields), as `qemu migrate --out` does.
        runs: [withPhaseTimes(runRecord('real', r, { label: `${workload} · ${policy} (real)`, workload, policy, seed: null }), phaseAtMs)],
      }),
    );
  }
  // Made without the engine (a second signal): no result event was printed.
  if (forced) io.out(values.json ? jsonLine({ ...resultJson(r), ts: new Date().toISOString() }) : resultLine(resultSummary(r)));
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
