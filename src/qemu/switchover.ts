/**
 * Switchover building blocks for a VM whose RAM presync has already copied:
 * QEMU's own migration stream, with `x-ignore-shared` on both ends, then
 * carries only device state (and the few non-shared RAM blocks such as ROMs).
 *
 * Order (engine's view):
 *   target: prepareTarget()                       -> listening, vCPUs never started
 *   source: prepareSource(); startMigrate(uri)
 *           waitPreSwitchover()                   -> source vCPUs stopped, RAM frozen
 *           (presync: final round, verify target RAM == source RAM)
 *           continueSwitchover()                  -> device state flows
 *   target: waitTargetRunning()
 * On any failure before the target runs: rollbackSource() (the guest goes on at the source).
 *
 * Names checked against QEMU 7.2 (qapi/migration.json): capabilities
 * `x-ignore-shared`, `pause-before-switchover`, `events`; commands
 * `migrate-incoming`, `migrate`, `migrate-continue`, `migrate_cancel`, `cont`.
 */
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { MigrationCapabilityName, MigrationInfo, MigrationStatus } from './qmp-commands.ts';
import type { QmpClient, QmpEvent } from './qmp.ts';
import { sleep } from '../transport/deadline.ts';

const DEFAULT_TIMEOUT_MS = 60_000;
const POLL_MS = 100;

/** Sets migration capabilities and checks that QEMU took them (an older QEMU may lack one). */
export async function setCapabilities(qmp: QmpClient, caps: Partial<Record<MigrationCapabilityName, boolean>>): Promise<void> {
  const list = Object.entries(caps).map(([capability, state]) => ({ capability: capability as MigrationCapabilityName, state: state === true }));
  await qmp.execute('migrate-set-capabilities', { capabilities: list });
  const now = await qmp.execute('query-migrate-capabilities');
  for (const want of list) {
    const got = now.find((c) => c.capability === want.capability);
    if (!got || got.state !== want.state) {
      throw new PresyncError(ErrorCodes.QEMU, `QEMU did not accept migration capability ${want.capability}=${want.state}; it needs QEMU >= 4.0`);
    }
  }
}

/** Source side: skip shared RAM in the stream, and stop at pre-switchover so presync can do its final round. */
export async function prepareSource(qmp: QmpClient): Promise<void> {
  await setCapabilities(qmp, { 'x-ignore-shared': true, 'pause-before-switchover': true, events: true });
}

/**
 * Target side (started with `-incoming defer`): skip shared RAM, then listen.
 * `listenUri` may use port 0; the returned uri carries the port QEMU got.
 */
export async function prepareTarget(qmp: QmpClient, listenUri = 'tcp:127.0.0.1:0'): Promise<{ uri: string }> {
  await setCapabilities(qmp, { 'x-ignore-shared': true, events: true });
  await qmp.execute('migrate-incoming', { uri: listenUri });
  return { uri: await resolveListenUri(qmp, listenUri) };
}

/** After `migrate-incoming`, the uri a source can connect to (resolves tcp port 0). */
export async function resolveListenUri(qmp: QmpClient, listenUri: string): Promise<string> {
  if (!/^tcp:.*:0$/.test(listenUri)) return listenUri;
  const info = await qmp.execute('query-migrate');
  const addr = info.socketAddresses[0];
  if (!addr) throw new PresyncError(ErrorCodes.QMP, `target did not report the port it listens on for ${listenUri}`);
  const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
  return `tcp:${host}:${addr.port}`;
}

export async function startMigrate(qmp: QmpClient, uri: string): Promise<void> {
  await qmp.execute('migrate', { uri });
}

const TERMINAL: ReadonlySet<MigrationStatus> = new Set(['completed', 'failed', 'cancelled']);

/**
 * Waits until the migration reaches one of `want`. A terminal status that was
 * not wanted (failed, cancelled, ...) rejects with PRESYNC_ERR_QEMU carrying
 * QEMU's error description. Race-free: subscribes to MIGRATION events before
 * querying, and also polls in case events are lost.
 */
export async function waitMigrationStatus(qmp: QmpClient, want: readonly MigrationStatus[], timeoutMs = DEFAULT_TIMEOUT_MS, pollMs = POLL_MS): Promise<MigrationInfo> {
  const deadline = Date.now() + timeoutMs;
  let wake: (() => void) | undefined;
  // An event may arrive in the same read as the query's reply, before the
  // waiter below exists: remembered, it makes the next wait return at once
  // instead of costing a whole poll interval (seen: 100 ms added to a pause).
  let signalled = false;
  const signal = (): void => {
    signalled = true;
    wake?.();
  };
  const off = qmp.onEvent((ev: QmpEvent) => {
    if (ev.event === 'MIGRATION') signal();
  });
  void qmp.closed.then(signal);
  try {
    for (;;) {
      signalled = false;
      const info = await qmp.execute('query-migrate');
      const st = info.status ?? 'none';
      if (want.includes(st)) return info;
      if (TERMINAL.has(st)) {
        throw new PresyncError(ErrorCodes.QEMU, `migration ended as ${st} while waiting for ${want.join('/')}${info.errorDesc ? `: ${info.errorDesc}` : ''}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new PresyncError(ErrorCodes.TIMEOUT, `migration still ${st} after ${timeoutMs} ms (waiting for ${want.join('/')})`);
      if (signalled) continue;
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(pollMs, left));
        function done() {
          clearTimeout(t);
          resolve();
        }
        wake = done;
      });
      wake = undefined;
    }
  } finally {
    off();
  }
}

/** Source: waits for `pre-switchover`, where QEMU has stopped the vCPUs and waits for migrate-continue. */
export async function waitPreSwitchover(qmp: QmpClient, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<MigrationInfo> {
  return waitMigrationStatus(qmp, ['pre-switchover'], timeoutMs);
}

/** Source: lets QEMU send the device state. The target's RAM must be complete before this. */
export async function continueSwitchover(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-continue', { state: 'pre-switchover' });
}

/** Source: waits until QEMU's stream is done; the result holds QEMU's downtime and byte counts. */
export async function waitMigrationCompleted(qmp: QmpClient, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<MigrationInfo> {
  return waitMigrationStatus(qmp, ['completed'], timeoutMs);
}

/**
 * A `completed` query-migrate whose times are filled in. QEMU 7.2 sets the
 * status to completed in migration_completion() and computes total-time and
 * downtime a moment later (migration_iteration_finish →
 * migration_calculate_complete), so a query in between reports both as 0:
 * seen as "QEMU says 0" in the bench and once as a failed e2e assertion.
 * Asks again for up to `settleMs`; returns the last answer either way.
 */
export async function completedFigures(qmp: QmpClient, info: MigrationInfo, settleMs = 1000, pollMs = 2): Promise<MigrationInfo> {
  const deadline = Date.now() + settleMs;
  let last = info;
  while (last.status === 'completed' && !((last.totalTimeMs ?? 0) > 0) && Date.now() < deadline) {
    await sleep(pollMs);
    last = await qmp.execute('query-migrate');
  }
  return last;
}

/**
 * Target: waits until its vCPUs run. If the incoming migration fails, QEMU
 * exits, which rejects with PRESYNC_ERR_QEMU through the closed connection.
 */
export async function waitTargetRunning(qmp: QmpClient, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
  const stop = new AbortController();
  const resumed = qmp.waitForEvent('RESUME', undefined, timeoutMs, { signal: stop.signal });
  resumed.catch(() => {});
  try {
    const st = await qmp.execute('query-status');
    if (st.running) return;
    await resumed;
  } finally {
    stop.abort();
  }
}

/**
 * Target started with -S: waits until the incoming stream has been loaded
 * (runstate leaves `inmigrate`), then `beforeCont` (e.g. stop serving the
 * disks over NBD, compare them), then `cont`, then until the vCPUs run.
 * A QEMU whose incoming migration fails exits, which rejects through the
 * closed connection.
 */
export async function startIncomingGuest(qmp: QmpClient, timeoutMs = DEFAULT_TIMEOUT_MS, beforeCont?: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = await qmp.execute('query-status');
    if (st.running) return;
    if (st.status !== 'inmigrate') break;
    if (Date.now() > deadline) throw new PresyncError(ErrorCodes.TIMEOUT, `the target QEMU is still loading the incoming migration after ${timeoutMs} ms`);
    await sleep(5);
  }
  await beforeCont?.();
  await qmp.execute('cont');
  await waitTargetRunning(qmp, Math.max(1000, deadline - Date.now()));
}

/**
 * Source: abandons the migration and makes sure the guest runs again here.
 * Safe to call in any state before completion (no migration, active,
 * pre-switchover, failed); refuses after completion, when the target may
 * already be running the guest — unless the caller knows the target holds
 * it paused (`targetHeldPaused`: presync's target QEMU runs with -S and
 * starts the guest only at HANDOVER).
 */
export async function rollbackSource(qmp: QmpClient, timeoutMs = 30_000, o: { targetHeldPaused?: boolean } = {}): Promise<void> {
  const before = await qmp.execute('query-migrate');
  if (before.status === 'completed' && o.targetHeldPaused !== true) {
    throw new PresyncError(ErrorCodes.BAD_PHASE, 'migration already completed: the target may be running the guest, so the source is not resumed');
  }
  if (before.status !== undefined && !TERMINAL.has(before.status) && before.status !== 'none') {
    await qmp.execute('migrate_cancel');
    await waitMigrationStatus(qmp, ['cancelled', 'failed'], timeoutMs);
  }
  // QEMU restarts a guest that was running when the migration began; cont covers the rest.
  let st = await qmp.execute('query-status');
  if (!st.running) {
    await qmp.execute('cont');
    st = await qmp.execute('query-status');
  }
  if (!st.running) throw new PresyncError(ErrorCodes.QEMU, `source guest did not resume after rollback (status ${st.status})`);
}
