import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../core/policies/registry.ts';
import { SourceMigration } from '../engine/source-session.ts';
import { ImageOnlyController } from '../guest/controller.ts';
import { stockMigrate } from '../qemu/stock.ts';
import { launchVm, matchingTargetOptions, type MachineSpec, type Vm } from '../qemu/vm.ts';
import { TcpTransport } from '../transport/tcp.ts';
import { initDigest } from '../native/page-digest.ts';
import { writeDataImage } from './perf-measure.ts';
import { buildTestGuest } from './test-guest.ts';
import { AGENT_START_GUARD_MS, JsonChild } from './child-json.ts';

const GUEST_BYTES = 1 << 30;

export interface QemuSideBySide {
  readonly guestBytes: number;
  /** How the guest's RAM was filled, so that nothing is a cheap zero page for either side. */
  readonly fill: string;
  /** presync full initial sync of the guest's RAM file to a target agent (another process). */
  readonly presyncMs: number;
  readonly presyncBytesPerSec: number;
  readonly presyncStreams: number;
  /** Stock pre-copy, max-bandwidth uncapped: guest RAM ÷ (migrate command → target running, host-measured). */
  readonly stockMs: number;
  readonly stockQemuTotalMs: number;
  readonly stockBytesPerSec: number;
  readonly stockNormalBytes: number;
  /** Stock pre-copy with multifd, 4 channels (null when it failed under this QEMU). */
  readonly multifdMs: number | null;
  readonly multifdQemuTotalMs: number | null;
  readonly multifdBytesPerSec: number | null;
  readonly multifdError: string | null;
  /** presync ÷ stock uncapped. */
  readonly throughputRatioVsQemu: number;
  readonly throughputRatioVsMultifd: number | null;
}

/**
 * The same running 1 GiB QEMU guest (TCG) moved over loopback, unshaped, by
 * presync's full initial sync and by stock QEMU pre-copy (uncapped, then with
 * multifd). The guest's RAM file is filled with distinct non-zero data before
 * boot and the guest's workload writes a 768 MiB buffer, so stock QEMU cannot
 * skip zero pages and presync cannot elide them either.
 */
export async function runQemuSideBySide(o: { streams?: number; onStep?: (s: string) => void } = {}): Promise<QemuSideBySide> {
  await initDigest();
  const step = o.onStep ?? (() => undefined);
  const guest = buildTestGuest();
  const dir = mkdtempSync(join(tmpdir(), 'presync-perfq-'));
  const shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'presync-perfq-'));
  const vms: Vm[] = [];
  let serve: JsonChild | undefined;
  const paths = (n: string) => ({ qmpSocket: join(dir, `${n}.qmp`), serialLog: join(dir, `${n}.serial`), memPath: join(shm, `${n}.ram`) });
  try {
    const spec: MachineSpec = {
      memBytes: GUEST_BYTES,
      ram: { kind: 'file', memPath: paths('src').memPath },
      kernel: guest.kernel,
      initrd: guest.initrd,
      append: 'console=ttyS0 quiet panic=-1 presync.mem=768M presync.workload=idle',
      machine: 'pc-i440fx-7.2',
    };
    step('qemu: filling and booting the 1 GiB guest');
    writeDataImage(paths('src').memPath, GUEST_BYTES, 0x51);
    const src = await launchVm({ ...spec, ...paths('src') });
    vms.push(src);
    await src.serial.waitForLine(/^START /, 180_000);

    // presync: full initial sync of the running guest's RAM file.
    step('qemu: presync full sync');
    const secret = Buffer.from('perf-qemu-secret-0123456789abcdef');
    writeFileSync(join(dir, 'secret'), secret);
    serve = JsonChild.cli(['serve', '--listen', '127.0.0.1:0', '--image', join(shm, 'presync-dst.img'), '--secret-file', join(dir, 'secret'), '--json']);
    const port = await serve.listeningPort(AGENT_START_GUARD_MS);
    let syncMs = -1;
    const start = performance.now();
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: { host: '127.0.0.1', port },
      secret,
      imagePath: paths('src').memPath,
      policy: createPolicy('presync-naive', { geometry: { pageSize: 4096, pageCount: GUEST_BYTES / 4096 }, seed: 1 }),
      controller: new ImageOnlyController(),
      streams: o.streams ?? 1,
      onEvent: (e) => {
        // The idle guest still writes a few pages (timers, the heartbeat): "in sync" is every page but those.
        if (e.event === 'progress' && syncMs < 0 && e.status.stalePages <= 64 && e.status.presyncBytes >= GUEST_BYTES * 0.9) {
          syncMs = performance.now() - start;
          m.stop();
        }
      },
    });
    await m.run();
    await serve.stop();
    if (syncMs < 0) throw new Error('presync did not finish the initial sync');

    step('qemu: stock pre-copy, uncapped');
    const dst = await launchVm(matchingTargetOptions(spec, { ...paths('dst') }));
    vms.push(dst);
    const stock = await stockMigrate(src.qmp, dst.qmp, { timeoutMs: 300_000 });

    step('qemu: stock pre-copy, multifd 4 channels');
    let multifdMs: number | null = null;
    let multifdQemuTotalMs: number | null = null;
    let multifdError: string | null = null;
    try {
      const mf = await launchVm(matchingTargetOptions(spec, { ...paths('mf') }));
      vms.push(mf);
      const r = await stockMigrate(dst.qmp, mf.qmp, { multifdChannels: 4, timeoutMs: 300_000 });
      multifdMs = r.launchToRunningMs;
      multifdQemuTotalMs = r.totalTimeMs;
    } catch (e) {
      multifdError = (e as Error).message;
    }
    const presyncBytesPerSec = (GUEST_BYTES / syncMs) * 1000;
    // Host-measured, migrate command to the target running (QEMU's own total-time is reported too;
    // it has come back as 0 from a completed 7.2 migration here).
    const stockBytesPerSec = (GUEST_BYTES / stock.launchToRunningMs) * 1000;
    const multifdBytesPerSec = multifdMs ? (GUEST_BYTES / multifdMs) * 1000 : null;
    return {
      guestBytes: GUEST_BYTES,
      fill: 'RAM file pre-filled with distinct non-zero data before boot; guest workload idle with a 768 MiB buffer written at start',
      presyncMs: syncMs,
      presyncBytesPerSec,
      presyncStreams: o.streams ?? 1,
      stockMs: stock.launchToRunningMs,
      stockQemuTotalMs: stock.totalTimeMs,
      stockBytesPerSec,
      stockNormalBytes: stock.normalBytes,
      multifdMs,
      multifdQemuTotalMs,
      multifdBytesPerSec,
      multifdError,
      throughputRatioVsQemu: presyncBytesPerSec / stockBytesPerSec,
      throughputRatioVsMultifd: multifdBytesPerSec ? presyncBytesPerSec / multifdBytesPerSec : null,
    };
  } finally {
    await serve?.stop();
    for (const vm of vms) await vm.dispose().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  }
}
