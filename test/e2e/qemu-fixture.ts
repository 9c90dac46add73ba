/**
 * Shared set-up for the real-QEMU tests: builds the test guest once, boots
 * VMs with their RAM in /dev/shm, and cleans everything up.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestGuest as buildGuest } from '../../src/lab/test-guest.ts';
import { launchVm, matchingTargetOptions, type LaunchOptions, type MachineSpec, type RamBackend, type Vm } from '../../src/qemu/vm.ts';
import { failures, heartbeats } from '../../src/qemu/guest-continuity.ts';
import type { SerialLog } from '../../src/qemu/serial.ts';


/** Why the real-QEMU tests cannot run here, or undefined if they can. */
export const qemuMissing: string | undefined = (() => {
  const r = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : 'qemu-system-x86_64 not found (run scripts/install-system-deps.sh)';
})();

export { buildGuest };

export class Lab {
  readonly dir = mkdtempSync(join(tmpdir(), 'presync-e2e-'));
  readonly shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'presync-e2e-'));
  readonly vms: Vm[] = [];

  spec(opts: { memMiB?: number; workload?: string; guestMem?: string; ram?: 'file' | 'anonymous'; name: string }): MachineSpec {
    const g = buildGuest();
    const ram: RamBackend = opts.ram === 'anonymous' ? { kind: 'anonymous' } : { kind: 'file', memPath: join(this.shm, `${opts.name}.ram`) };
    return {
      memBytes: (opts.memMiB ?? 128) << 20,
      ram,
      kernel: g.kernel,
      initrd: g.initrd,
      append: `console=ttyS0 quiet panic=-1 presync.mem=${opts.guestMem ?? '32M'} presync.workload=${opts.workload ?? 'text'}`,
      machine: 'pc-i440fx-7.2',
    };
  }

  paths(name: string): { qmpSocket: string; serialLog: string; memPath: string } {
    return { qmpSocket: join(this.dir, `${name}.qmp`), serialLog: join(this.dir, `${name}.serial`), memPath: join(this.shm, `${name}.ram`) };
  }

  async launch(spec: MachineSpec, name: string, extra: Partial<LaunchOptions> = {}): Promise<Vm> {
    const p = this.paths(name);
    const vm = await launchVm({ ...spec, qmpSocket: p.qmpSocket, serialLog: p.serialLog, ...extra });
    this.vms.push(vm);
    return vm;
  }

  async launchTarget(source: MachineSpec, name: string): Promise<Vm> {
    const p = this.paths(name);
    const opts = matchingTargetOptions(source, p);
    if (source.ram.kind === 'anonymous') opts.ram = { kind: 'anonymous' };
    const vm = await launchVm(opts);
    this.vms.push(vm);
    return vm;
  }

  async cleanup(): Promise<void> {
    for (const vm of this.vms) await vm.dispose().catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
    rmSync(this.shm, { recursive: true, force: true });
  }
}

// The serial checks live in src/ so the QEMU bench judges migrations by the same rule.
export { failures, heartbeats } from '../../src/qemu/guest-continuity.ts';

/** Boot to the workload's first OK (buffer written and checked once). */
export async function waitHealthy(vm: Vm, timeoutMs = 60_000): Promise<number> {
  const ok = await vm.serial.waitForLine(/^OK (\d+)/, timeoutMs);
  return Number(ok.match[1]);
}

/** The target continues the source's guest: OK past the source's last heartbeat, heartbeats continuing, no FAIL anywhere. */
export async function assertContinues(target: SerialLog, source: SerialLog, lastSourceHb: number): Promise<void> {
  const ok = await target.waitForLine(/^OK (\d+)/, 60_000);
  assert.ok(Number(ok.match[1]) > lastSourceHb, `target OK ${ok.match[1]} continues past the source's last heartbeat ${lastSourceHb}`);
  const hb = heartbeats(target);
  assert.ok(hb.length > 0 && hb[0] >= lastSourceHb, `target heartbeats start at ${hb[0]}, source stopped at ${lastSourceHb}`);
  // One more OK: the verifier completed another pass over the buffer on the target.
  await target.waitForLine(/^OK/, 30_000, target.nextIndex);
  assert.deepEqual(failures(target), []);
  assert.deepEqual(failures(source), []);
}
