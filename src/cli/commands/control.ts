import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { controlRequest, type ControlRequest } from '../../engine/control.ts';
import { formatBytes, formatDuration } from '../progress.ts';
import { formatRate } from '../../transport/rate.ts';
import { parseFlags, type Options } from '../args.ts';
import { bandwidthFlag, durationFlag, jsonLine } from '../common.ts';
import { EXIT_CODES } from '../exit-codes.ts';
import type { CommandIO } from '../io.ts';

/**
 * The operator's commands to a running `migrate` / `qemu migrate` through its
 * control socket (--control SOCKET): launch, status, abort, set.
 */

const COMMON = { control: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;

interface Parsed {
  control: string;
  json: boolean;
  values: Record<string, string | boolean | undefined>;
}

function parseControl(argv: string[], extra: Options, usage: string, help: string, io: CommandIO): Parsed | null {
  const { values } = parseFlags(argv, { ...COMMON, ...extra }, usage);
  const v = values as Record<string, string | boolean | undefined>;
  if (v.help === true) {
    io.out(help);
    return null;
  }
  if (typeof v.control !== 'string' || v.control === '') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--control SOCKET is required\nusage: ${usage}`);
  return { control: v.control, json: v.json === true, values: v };
}

const n = (v: unknown): number => Number(v);

/** `phase presync, 12 s; in sync 85.2 %; sent 120 MiB, 30 MiB to go; …` */
export function formatStatus(st: Record<string, unknown>): string {
  const parts = [
    `phase ${String(st.phase)}, ${formatDuration(n(st.elapsedMs))}`,
    `in sync ${n(st.inSyncPercent).toFixed(1)} %${st.initialCopyDone === false ? ' (initial copy)' : ''}`,
    `sent ${formatBytes(n(st.bytesSent))}, ${formatBytes(n(st.bytesRemaining))} to go`,
    `transfer ${formatRate(n(st.transferRateBytesPerSec))}, dirty ${formatBytes(n(st.dirtyRateBytesPerSec))}/s`,
    `expected downtime ${formatDuration(n(st.expectedDowntimeMs))} (limit ${formatDuration(n(st.downtimeLimitMs))})`,
    `bandwidth limit ${st.bandwidthLimitBytesPerSec === null || st.bandwidthLimitBytesPerSec === undefined ? 'none' : formatRate(n(st.bandwidthLimitBytesPerSec))}`,
  ];
  if (st.launched === true) parts.push('launched');
  else if (st.launchWhenReady === true) parts.push(st.ready === true ? 'ready: launching' : 'launches when ready');
  else if (st.launchInMs !== null && st.launchInMs !== undefined) parts.push(`launch in ${formatDuration(n(st.launchInMs))}`);
  else parts.push(st.ready === true ? 'launch-ready' : 'not ready');
  return parts.join('; ') + '\n';
}

async function send(p: Parsed, req: ControlRequest, io: CommandIO, human: (st: Record<string, unknown>) => string): Promise<number> {
  const st = await controlRequest(p.control, req);
  io.out(p.json ? jsonLine({ ...st, ts: new Date().toISOString() }) : human(st));
  return 0;
}

const LAUNCH_USAGE = 'presync launch --control SOCKET [--when-ready] [--json]';
export async function launchCommand(argv: string[], io: CommandIO): Promise<number> {
  const help = `${LAUNCH_USAGE}

Tells a running "presync migrate --control SOCKET" to launch: one more live round,
then the pause, the final copy, verification and handover.

  --when-ready   launch as soon as the initial copy is done and the pause expected
                 fits the downtime limit (see "presync set --downtime-limit")
  --json         print the migration's status as one JSON line

Examples:
  presync launch --control /run/presync.sock
  presync launch --control /run/presync.sock --when-ready

${EXIT_CODES}`;
  const p = parseControl(argv, { 'when-ready': { type: 'boolean' } }, LAUNCH_USAGE, help, io);
  if (!p) return 0;
  const whenReady = p.values['when-ready'] === true;
  return await send(p, { cmd: 'launch', ...(whenReady ? { whenReady: true } : {}) }, io, (st) =>
    whenReady && st.launched !== true ? `will launch when ready (${formatStatus(st).trimEnd()})\n` : `launched (${formatStatus(st).trimEnd()})\n`,
  );
}

const STATUS_USAGE = 'presync status --control SOCKET [--json]';
export async function statusCommand(argv: string[], io: CommandIO): Promise<number> {
  const help = `${STATUS_USAGE}

Live figures of a running "presync migrate --control SOCKET": phase, elapsed time,
in sync %, bytes sent and remaining, transfer and dirty rates, expected downtime,
limits and when it launches. --json prints exact numbers (bytes, bytes/s, ms).

Examples:
  presync status --control /run/presync.sock
  watch -n1 presync status --control /run/presync.sock

${EXIT_CODES}`;
  const p = parseControl(argv, {}, STATUS_USAGE, help, io);
  if (!p) return 0;
  return await send(p, { cmd: 'status' }, io, formatStatus);
}

const ABORT_USAGE = 'presync abort --control SOCKET [--reason TEXT] [--json]';
export async function abortCommand(argv: string[], io: CommandIO): Promise<number> {
  const help = `${ABORT_USAGE}

Rolls a running migration back (as QEMU's migrate_cancel): the guest keeps running
on the source, the target discards what it received, and "presync migrate" ends
with outcome rolled-back. A migration whose handover was already sent cannot be
called back.

Examples:
  presync abort --control /run/presync.sock --reason "maintenance cancelled"

${EXIT_CODES}`;
  const p = parseControl(argv, { reason: { type: 'string' } }, ABORT_USAGE, help, io);
  if (!p) return 0;
  const reason = typeof p.values.reason === 'string' ? p.values.reason : undefined;
  return await send(p, { cmd: 'abort', ...(reason !== undefined ? { reason } : {}) }, io, (st) => `aborting (phase ${String(st.phase)})\n`);
}

const SET_USAGE = 'presync set --control SOCKET [--bandwidth RATE|none] [--downtime-limit DURATION] [--json]';
export async function setCommand(argv: string[], io: CommandIO): Promise<number> {
  const help = `${SET_USAGE}

Changes a running migration's limits (as QEMU's migrate-set-parameters):

  --bandwidth RATE           send-rate limit from now on (1gbit, 100mbit, 50MB/s;
                             "none" lifts it)
  --downtime-limit DURATION  the longest pause the switchover may plan (300ms, 1s);
                             also when "launch --when-ready" fires

Examples:
  presync set --control /run/presync.sock --bandwidth 200mbit
  presync set --control /run/presync.sock --downtime-limit 100ms

${EXIT_CODES}`;
  const p = parseControl(argv, { bandwidth: { type: 'string' }, 'downtime-limit': { type: 'string' } }, SET_USAGE, help, io);
  if (!p) return 0;
  const bw = p.values.bandwidth;
  const dl = p.values['downtime-limit'];
  if (typeof bw !== 'string' && typeof dl !== 'string') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `nothing to set: give --bandwidth and/or --downtime-limit\nusage: ${SET_USAGE}`);
  // Checked here for a clear error; the agent parses the same strings again.
  if (typeof bw === 'string' && bw !== 'none') bandwidthFlag(bw);
  if (typeof dl === 'string') durationFlag(dl, 'downtime-limit');
  const req: ControlRequest = {
    cmd: 'set',
    ...(typeof bw === 'string' ? { bandwidth: bw === 'none' ? null : bw } : {}),
    ...(typeof dl === 'string' ? { downtimeLimit: dl } : {}),
  };
  return await send(p, req, io, (st) => `set (${formatStatus(st).trimEnd()})\n`);
}
