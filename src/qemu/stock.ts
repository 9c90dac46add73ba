/**
 * The baseline presync is measured against: QEMU's own pre-copy live
 * migration over TCP, all RAM in the stream (no x-ignore-shared), with the
 * figures reported by QEMU itself rather than re-measured by us.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { MigrationInfo } from './qmp-commands.ts';
import type { QmpClient } from './qmp.ts';
import { resolveListenUri, setCapabilities, completedFigures } from './switchover.ts';
import { sleep } from '../transport/deadline.ts';

/** "No cap": QEMU rejects values above SIZE_MAX; 1 TiB/s is far beyond any link. */
export const UNCAPPED_BANDWIDTH = 2 ** 40;
/** QEMU's default max-bandwidth in 2012 (the paper's era); 7.2's default is 128 MiB/s. */
export const QEMU_2012_DEFAULT_BANDWIDTH = 32 * 1024 * 1024;

export interface StockMigrationOptions {
  /** Bytes/s; default UNCAPPED_BANDWIDTH. */
  maxBandwidthBytesPerSec?: number;
  /** Default 300 (QEMU's default). */
  downtimeLimitMs?: number;
  /** Enables multifd with this many channels (both ends). */
  multifdChannels?: number;
  /** Where the target listens; port 0 picks a free one. Default tcp:127.0.0.1:0. */
  listenUri?: string;
  /** What the source connects to, when it differs from the listen address (another host, NAT). */
  connectUri?: string;
  /** Give up (and cancel) after this long; a migration that never converges ends here. Default 10 min. */
  timeoutMs?: number;
  pollMs?: number;
  /** Called with every query-migrate sample of the source. */
  onProgress?: (info: MigrationInfo, elapsedMs: number) => void;
  /**
   * Runs with the source vCPUs stopped before QEMU sends the device state
   * (pause-before-switchover), as libvirt completes its NBD disk mirrors
   * there with --copy-storage-all; counts in the downtime.
   */
  atPreSwitchover?: () => Promise<void>;
}

export interface StockMigrationResult {
  /** QEMU's total-time: from `migrate` to completion, ms. */
  totalTimeMs: number;
  /** QEMU's downtime: guest stopped on the source until the target could run, ms. */
  downtimeMs: number;
  setupTimeMs: number;
  /** Bytes QEMU sent for RAM (ram.transferred, includes multifd). */
  transferredBytes: number;
  /** Guest RAM size QEMU migrated (ram.total). */
  ramTotal: number;
  /** Dirty-bitmap syncs: 1 + the number of pre-copy rounds after the first. */
  iterations: number;
  duplicatePages: number;
  normalPages: number;
  normalBytes: number;
  mbps: number;
  /** Host-measured: from the migrate command to the target's RESUME event, ms. */
  launchToRunningMs: number;
  /** Every query-migrate sample count (for plots, see onProgress). */
  samples: number;
  raw: MigrationInfo;
}

const progressChannel = diagnostics_channel.channel('presync:stock:progress');

/**
 * Migrates the VM behind `source` into the one behind `target` (started with
 * `-incoming defer` and a matching machine). Resolves when QEMU reports
 * `completed` and the target runs.
 */
export async function stockMigrate(source: QmpClient, target: QmpClient, opts: StockMigrationOptions = {}): Promise<StockMigrationResult> {
  const bandwidth = opts.maxBandwidthBytesPerSec ?? UNCAPPED_BANDWIDTH;
  const downtime = opts.downtimeLimitMs ?? 300;
  if (!Number.isSafeInteger(bandwidth) || bandwidth <= 0) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `max bandwidth must be a positive integer (bytes/s), got ${bandwidth}`);
  if (!Number.isSafeInteger(downtime) || downtime <= 0) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `downtime limit must be a positive integer (ms), got ${downtime}`);
  const multifd = opts.multifdChannels !== undefined;
  if (multifd && (!Number.isSafeInteger(opts.multifdChannels) || (opts.multifdChannels ?? 0) < 1 || (opts.multifdChannels ?? 0) > 255)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `multifd channels must be 1..255, got ${opts.multifdChannels}`);
  }
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const pollMs = opts.pollMs ?? 100;

  // Explicitly off: a VM prepared for presync earlier must not skip its RAM here.
  const caps = { 'x-ignore-shared': false, multifd, events: true } as const;
  await setCapabilities(target, caps);
  if (multifd) await target.execute('migrate-set-parameters', { 'multifd-channels': opts.multifdChannels });
  const listenUri = opts.listenUri ?? 'tcp:127.0.0.1:0';
  await target.execute('migrate-incoming', { uri: listenUri });
  const uri = opts.connectUri ?? (await resolveListenUri(target, listenUri));

  await setCapabilities(source, { ...caps, 'pause-before-switchover': opts.atPreSwitchover !== undefined });
  await source.execute('migrate-set-parameters', {
    'max-bandwidth': bandwidth,
    'downtime-limit': downtime,
    ...(multifd ? { 'multifd-channels': opts.multifdChannels } : {}),
  });

  const stopWaiting = new AbortController();
  const resumed = target.waitForEvent('RESUME', undefined, timeoutMs, { signal: stopWaiting.signal });
  resumed.catch(() => {});
  const t0 = performance.now();
  await source.execute('migrate', { uri });

  let samples = 0;
  let info: MigrationInfo;
  try {
    for (;;) {
      info = await source.execute('query-migrate');
      samples++;
      const elapsed = performance.now() - t0;
      opts.onProgress?.(info, elapsed);
      if (progressChannel.hasSubscribers) progressChannel.publish({ info, elapsedMs: elapsed });
      if (info.status === 'completed') break;
      if (info.status === 'pre-switchover' && opts.atPreSwitchover) {
        try {
          await opts.atPreSwitchover();
        } catch (e) {
          await source.execute('migrate_cancel').catch(() => {});
          throw e;
        }
        await source.execute('migrate-continue', { state: 'pre-switchover' });
        continue;
      }
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw new PresyncError(ErrorCodes.QEMU, `stock migration ${info.status}${info.errorDesc ? `: ${info.errorDesc}` : ''}`);
      }
      if (elapsed > timeoutMs) {
        await source.execute('migrate_cancel').catch(() => {});
        throw new PresyncError(ErrorCodes.NO_CONVERGENCE, `stock migration still ${info.status} after ${timeoutMs} ms (${info.ram?.dirtySyncCount ?? 0} rounds); cancelled. Raise max-bandwidth or downtime-limit`);
      }
      await sleep(pollMs);
    }
    await resumed;
  } finally {
    stopWaiting.abort();
  }
  const launchToRunningMs = performance.now() - t0;
  info = await completedFigures(source, info);
  const ram = info.ram;
  if (!ram || info.totalTimeMs === undefined || info.downtimeMs === undefined) {
    throw new PresyncError(ErrorCodes.QMP, 'completed migration reported no ram/total-time/downtime figures');
  }
  return {
    totalTimeMs: info.totalTimeMs,
    downtimeMs: info.downtimeMs,
    setupTimeMs: info.setupTimeMs ?? 0,
    transferredBytes: ram.transferred,
    ramTotal: ram.total,
    iterations: ram.dirtySyncCount,
    duplicatePages: ram.duplicate,
    normalPages: ram.normal,
    normalBytes: ram.normalBytes,
    mbps: ram.mbps,
    launchToRunningMs,
    samples,
    raw: info,
  };
}
