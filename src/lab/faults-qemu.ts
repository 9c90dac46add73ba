/**
 * Fault cases for real QEMU guests: the test guest (test-guest/, built by
 * scripts/build-guest.sh) keeps a buffer it rewrites and re-checks, printing
 * `HB n` heartbeats and `OK n` after each verified pass, `FAIL` on a
 * mismatch. Its RAM is a memory-backend-file in /dev/shm that presync syncs.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../core/policies/registry.ts';
import type { GuestController } from '../guest/controller.ts';
import { metaPath } from '../guest/target-image.ts';
import { SourceMigration, type MigrationResult } from '../engine/source-session.ts';
import { TargetAgent } from '../engine/target-agent.ts';
import { QemuGuestController } from '../qemu/qemu-controller.ts';
import { claimImageGeometry, QemuTarget } from '../qemu/qemu-target.ts';
import type { SerialLog } from '../qemu/serial.ts';
import { launchVm, matchingTargetOptions, type MachineSpec, type Vm } from '../qemu/vm.ts';
import { TcpTransport } from '../transport/tcp.ts';
import type { FaultCase } from './fault-case.ts';
import { sleep } from '../transport/deadline.ts';
import { buildTestGuest } from './test-guest.ts';

const SECRET = Buffer.from('presync-fault-matrix-qemu-secret');

let qemuChecked: string | undefined | null = null;
function qemuMissing(): string | undefined {
  if (qemuChecked === null) {
    const r = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
    qemuChecked = r.status === 0 ? undefined : 'qemu-system-x86_64 not found (scripts/install-system-deps.sh installs it)';
  }
  return qemuChecked;
}


function heartbeats(serial: SerialLog, since = 0): number[] {
  return serial.matching(/^HB (\d+)$/, since).map((m) => Number(m.match[1]));
}

function failures(serial: SerialLog): string[] {
  return serial.matching(/^FAIL\b/).map((m) => m.text);
}

/** A source VM, a target QEMU waiting for the switchover, and a target agent whose image is that QEMU's RAM file. */
class QemuRig {
  readonly dir: string;
  readonly shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'presync-fault-'));
  readonly spec: MachineSpec;
  src!: Vm;
  target!: QemuTarget;
  agent!: TargetAgent;
  hookRan = false;

  constructor(dir: string) {
    this.dir = dir;
    const g = buildTestGuest();
    this.spec = {
      memBytes: 128 << 20,
      ram: { kind: 'file', memPath: join(this.shm, 'src.ram') },
      kernel: g.kernel,
      initrd: g.initrd,
      append: 'console=ttyS0 quiet panic=-1 presync.mem=32M presync.workload=text',
      machine: 'pc-i440fx-7.2',
    };
  }

  async start(): Promise<void> {
    this.src = await launchVm({ ...this.spec, qmpSocket: join(this.dir, 'src.qmp'), serialLog: join(this.dir, 'src.serial') });
    await this.src.serial.waitForLine(/^OK (\d+)/, 90_000);
    const dst = { memPath: join(this.shm, 'dst.ram'), qmpSocket: join(this.dir, 'dst.qmp'), serialLog: join(this.dir, 'dst.serial') };
    claimImageGeometry(dst.memPath, { pageSize: 4096, pageCount: this.spec.memBytes / 4096 });
    this.target = await QemuTarget.start({ launch: matchingTargetOptions(this.spec, dst), listenUri: 'tcp:127.0.0.1:0' });
    const hook = this.target.hook();
    this.agent = await TargetAgent.start({
      transport: new TcpTransport(),
      listen: { host: '127.0.0.1', port: 0 },
      imagePath: dst.memPath,
      secret: SECRET,
      force: true,
      hook: {
        start: (ctx) => {
          this.hookRan = true;
          return hook.start(ctx);
        },
      },
    });
  }

  migration(controller: GuestController): SourceMigration {
    return new SourceMigration({
      transport: new TcpTransport(),
      to: this.agent.address,
      secret: SECRET,
      imagePath: (this.spec.ram as { memPath: string }).memPath,
      policy: createPolicy('presync', { geometry: { pageSize: 4096, pageCount: this.spec.memBytes / 4096 }, seed: 1 }),
      controller,
      epochMs: 100,
      stepTimeoutMs: 20_000,
    });
  }

  /** Is any guest running on the target (its QEMU out of inmigrate)? */
  async targetRuns(): Promise<boolean> {
    const vm = this.target.vm;
    if (!vm || vm.hasExited) return false;
    try {
      return (await vm.qmp.execute('query-status')).running;
    } catch {
      return false;
    }
  }

  targetImageState(): string {
    try {
      return (JSON.parse(readFileSync(metaPath(this.target.imagePath), 'utf8')) as { state: string }).state;
    } catch {
      return 'absent';
    }
  }

  async close(): Promise<void> {
    await this.agent?.close().catch(() => undefined);
    await this.target?.close({ alsoRunning: true }).catch(() => undefined);
    await this.src?.dispose().catch(() => undefined);
    rmSync(this.shm, { recursive: true, force: true });
  }
}

function outcomeOf(r: MigrationResult): 'done' | 'rolled-back' | 'in-doubt' {
  return r.outcome;
}

const targetQemuDies: FaultCase = {
  name: 'qemu-target-dies',
  inject: 'target QEMU SIGKILLed while the source QEMU waits at pre-switchover',
  skip: qemuMissing,
  async run({ dir }) {
    const rig = new QemuRig(dir);
    try {
      await rig.start();
      const inner = new QemuGuestController(rig.src.qmp, { targetUri: rig.target.uri });
      const firstQemu = rig.target.vm!;
      let lastSrc = -1;
      const controller: GuestController = {
        kind: inner.kind,
        pause: async () => {
          await inner.pause();
          await rig.src.serial.flush();
          lastSrc = Math.max(...heartbeats(rig.src.serial));
          await firstQemu.kill();
        },
        resume: () => inner.resume(),
        commit: () => inner.commit(),
        release: () => inner.release(),
        isAlive: () => inner.isAlive(),
      };
      const m = rig.migration(controller);
      setTimeout(() => m.launch(), 3000);
      const r = await m.run();
      const running = (await rig.src.qmp.execute('query-status')).running;
      const mark = rig.src.serial.nextIndex;
      const ok = await rig.src.serial.waitForLine(/^OK (\d+)/, 30_000, mark).catch(() => undefined);
      const progressed = ok !== undefined && Number(ok.match[1]) > lastSrc && heartbeats(rig.src.serial, mark).every((v) => v > lastSrc);
      const fails = failures(rig.src.serial);
      const targetRuns = await rig.targetRuns();
      return {
        outcome: outcomeOf(r),
        guestRunning: running && progressed && !targetRuns && !rig.hookRan,
        memoryVerified: ok !== undefined && fails.length === 0,
        lostPages: fails.length,
        detail: `rolled back (${r.error?.code ?? 'no error'}); source resumed past heartbeat ${lastSrc} (OK ${ok?.match[1] ?? 'none'}); target image ${rig.targetImageState()}`,
        checks: r.outcome === 'rolled-back',
      };
    } finally {
      await rig.close();
    }
  },
};

const sourceQemuDies: FaultCase = {
  name: 'qemu-source-dies',
  inject: 'source QEMU SIGKILLed during presync, then launch',
  skip: qemuMissing,
  async run({ dir }) {
    const rig = new QemuRig(dir);
    try {
      await rig.start();
      const controller = new QemuGuestController(rig.src.qmp, { targetUri: rig.target.uri });
      const m = rig.migration(controller);
      const killing = (async () => {
        await sleep(1500);
        await rig.src.kill();
        await sleep(300);
        m.launch();
      })();
      const r = await m.run();
      await killing;
      const targetRuns = await rig.targetRuns();
      const imgState = rig.targetImageState();
      // The fault itself ended the guest; presync must not have started a copy anywhere.
      return {
        outcome: outcomeOf(r),
        guestRunning: !targetRuns && !rig.hookRan,
        memoryVerified: imgState !== 'valid',
        lostPages: 0,
        detail: `ended ${r.outcome} with ${r.error?.code ?? 'no error'}${r.error?.code === 'PRESYNC_ERR_GUEST_GONE' ? ' (seen during presync)' : ' at launch'}${/closed/.test(r.error?.message ?? '') ? ' (QMP connection to the source QEMU closed)' : ''}; nothing started on the target (image ${imgState})`,
        checks: r.outcome === 'rolled-back' && r.error !== null,
      };
    } finally {
      await rig.close();
    }
  },
};

export const QEMU_CASES: readonly FaultCase[] = [targetQemuDies, sourceQemuDies];
