import { writeFileSync } from 'node:fs';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { createPolicy, policyNames } from '../../core/policies/registry.ts';
import { ControlServer } from '../../engine/control.ts';
import { SourceMigration, type MigrationResult } from '../../engine/source-session.ts';
import { ImageOnlyController, ProcessController } from '../../guest/controller.ts';
import { RamImageReader } from '../../guest/ram-image.ts';
import { formatRate } from '../../transport/rate.ts';
import { intFlag, parseFlags } from '../args.ts';
import { TRANSPORT_FLAGS, addressFlag, durationFlag, jsonLine, readSecret, transportFromFlags } from '../common.ts';
import type { CommandIO } from '../io.ts';

const USAGE =
  'presync migrate --image PATH --to HOST:PORT --secret-file F [--policy NAME] [--pid PID] [--bandwidth RATE] ' +
  '[--launch-after DURATION | --control SOCKET] [--epoch DURATION] [--codec none|deflate|lz4] [--downtime-limit DURATION] [--image-id ID] [--out FILE] [--json]';

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
      'launch-after': { type: 'string' },
      control: { type: 'string' },
      epoch: { type: 'string' },
      codec: { type: 'string' },
      'downtime-limit': { type: 'string' },
      'image-id': { type: 'string' },
      'page-size': { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
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
  const controller = values.pid !== undefined ? new ProcessController(intFlag(values.pid, 'pid', 0, 2)) : new ImageOnlyController();
  // Geometry comes from the image itself; open once to validate before connecting.
  const probe = RamImageReader.open(values.image, pageSize);
  const geometry = probe.geometry;
  probe.close();
  const policy = createPolicy(values.policy ?? 'presync', { geometry, seed: 1 }, downtimeLimitMs !== undefined ? { downtimeLimitMs } : {});

  let lastProgress = 0;
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
    ...(bandwidthBytesPerSec !== undefined ? { bandwidthBytesPerSec } : {}),
    onEvent: (e) => {
      if (values.json) return;
      if (e.event === 'progress' && e.status.elapsedMs - lastProgress >= 1000) {
        lastProgress = e.status.elapsedMs;
        const s = e.status;
        io.err(
          `presync: ${s.phase}  in sync ${s.inSyncPercent.toFixed(1)} %  rate ${formatRate(s.rateBytesPerSec)}  expected downtime if launched now ${s.expectedDowntimeMs.toFixed(0)} ms\n`,
        );
      } else if (e.event === 'phase') io.err(`presync: phase ${e.phase}\n`);
      else if (e.event === 'disconnected') io.err(`presync: connection lost (${e.error.code}); reconnecting\n`);
      else if (e.event === 'connected' && e.attempt > 0) io.err(`presync: reconnected, ${e.stalePages} pages to resend\n`);
    },
  });
  let control: ControlServer | undefined;
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
  let r: MigrationResult;
  try {
    r = await m.run();
  } finally {
    if (timer) clearTimeout(timer);
    await control?.close();
  }
  if (values.out) writeFileSync(values.out, JSON.stringify({ format: 'presync-result/1', kind: 'migration', policy: policy.name, image: values.image, result: { ...resultJson(r), series: r.series } }) + '\n');
  if (values.json) io.out(jsonLine(resultJson(r)));
  else {
    const j = resultJson(r);
    io.out(
      r.outcome === 'done'
        ? `migrated: launch→running ${j.launchToRunningMs} ms, downtime ${j.downtimeMs} ms, presync ${r.presyncBytes} B, final ${r.finalBytes} B, residual at launch ${r.residualPagesAtLaunch} pages, verified\n`
        : `${r.outcome}: ${r.error?.code}: ${r.error?.message}\n`,
    );
  }
  return r.outcome === 'done' ? 0 : 1;
}
