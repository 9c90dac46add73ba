/**
 * The real test VM (test-guest/README.md, "The real VM"): built by
 * scripts/build-real-vm.sh, booted from its ext4 root file system on a
 * virtio-blk disk with a virtio-net NIC on a tap device of the lab network
 * (vm-network.ts). Its disk writer's serial lines (guestd disk) say whether
 * every record it fsynced is on the disk; `checkDiskContinuity` judges a
 * migrated guest's disk by them, like guest-continuity.ts judges its memory.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { SerialLog } from '../qemu/serial.ts';
import type { MachineSpec } from '../qemu/vm.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface RealVmImages {
  readonly kernel: string;
  readonly initrd: string;
  /** The pristine root file system image: copy it (`copyRootDisk`) for each VM, never boot it. */
  readonly rootfs: string;
  /** Kernel package, busybox and e2fsprogs versions, one a line. */
  readonly versions: string;
}

let built: RealVmImages | undefined;

/** Builds the real VM once per process (the script skips what is up to date). */
export function buildRealVm(outDir = join(ROOT, 'test-guest/build/real-vm')): RealVmImages {
  if (built && dirname(built.rootfs) === outDir) return built;
  try {
    execFileSync(join(ROOT, 'scripts/build-real-vm.sh'), [outDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim().split('\n').slice(-3).join(' | ');
    throw new PresyncError(ErrorCodes.INTERNAL, `scripts/build-real-vm.sh failed: ${stderr || (e as Error).message}`, { cause: e });
  }
  built = {
    kernel: join(outDir, 'vmlinuz'),
    initrd: join(outDir, 'initrd.img'),
    rootfs: join(outDir, 'rootfs.img'),
    versions: readFileSync(join(outDir, 'versions.txt'), 'utf8').trim(),
  };
  return built;
}

/** A private, writable copy of the root disk (sparse: ~8 MiB of 128 MiB are used). */
export function copyRootDisk(images: RealVmImages, to: string): string {
  execFileSync('cp', ['--sparse=always', '--reflink=auto', images.rootfs, to]);
  return to;
}

export const DISK_ID = 'disk0';
/** guestd's echo port (kernel command line `presync.echo=`). */
export const ECHO_PORT = 7;

/** QEMU arguments for the root disk: raw, virtio-blk, the host's page cache (same-host shared storage). */
export function rootDiskArgs(path: string): string[] {
  return ['-drive', `file=${path.replaceAll(',', ',,')},format=raw,if=none,id=${DISK_ID},cache=writeback`, '-device', `virtio-blk-pci,drive=${DISK_ID}`];
}

export interface RealVmBoot {
  readonly images: RealVmImages;
  readonly memBytes: number;
  readonly ram: MachineSpec['ram'];
  /** presync.workload: text, audio, movie or idle. */
  readonly workload: string;
  /** The memory workload's buffer, e.g. '256M'. */
  readonly workloadMem: string;
  /** Extra kernel command line (the lab network's `presync.ip=…`). */
  readonly cmdline?: string;
  readonly accel?: MachineSpec['accel'];
}

export const REAL_VM_MACHINE = 'pc-i440fx-7.2';

/** The machine spec of the real VM (its disk and NIC are extra arguments: rootDiskArgs, VmNetwork.nicArgs). */
export function realVmSpec(b: RealVmBoot): MachineSpec {
  return {
    memBytes: b.memBytes,
    ram: b.ram,
    kernel: b.images.kernel,
    initrd: b.images.initrd,
    append: `console=ttyS0 quiet panic=-1 root=/dev/vda rw presync.mem=${b.workloadMem} presync.workload=${b.workload}${b.cmdline ? ` ${b.cmdline}` : ''}`,
    machine: REAL_VM_MACHINE,
    accel: b.accel ?? 'tcg',
  };
}

/** `DISK OK <written> <verified>` lines since line `since`. */
export function diskOks(serial: SerialLog, since = 0): Array<{ written: number; verified: number; index: number }> {
  return serial.matching(/^DISK OK (\d+) (\d+)$/, since).map((m) => ({ written: Number(m.match[1]), verified: Number(m.match[2]), index: m.index }));
}

export function diskFailures(serial: SerialLog): string[] {
  return serial.matching(/^DISK FAIL\b/).map((m) => m.text);
}

/** The source's last disk-writer count (after reading what QEMU wrote), or -1. */
export async function lastDiskWritten(serial: SerialLog): Promise<number> {
  await serial.flush();
  const oks = diskOks(serial);
  return oks.length === 0 ? -1 : Math.max(...oks.map((o) => o.written));
}

export interface DiskVerdict {
  ok: boolean;
  /** Why not, in one line; empty when ok. */
  reason: string;
  /** The target's first DISK OK: records fsynced, records read back valid from the disk. */
  targetWritten: number | null;
  targetVerified: number | null;
  lastSourceWritten: number;
}

/**
 * The disk writer went on on the target with every record on the disk: the
 * target's first `DISK OK` counts past the source's last one (the same writer,
 * not a rebooted guest: its count lives in guest memory), a second one follows
 * (its O_DIRECT check of every record passed twice on the target's disk), and
 * neither console says `DISK FAIL`.
 */
export async function checkDiskContinuity(target: SerialLog, source: SerialLog, lastSourceWritten: number, timeoutMs = 60_000): Promise<DiskVerdict> {
  const v: DiskVerdict = { ok: false, reason: '', targetWritten: null, targetVerified: null, lastSourceWritten };
  try {
    const first = await target.waitForLine(/^DISK OK (\d+) (\d+)$/, timeoutMs);
    v.targetWritten = Number(first.match[1]);
    v.targetVerified = Number(first.match[2]);
    if (!(v.targetWritten > lastSourceWritten)) v.reason = `target's disk writer is at ${v.targetWritten} records, not past the source's ${lastSourceWritten}`;
    else await target.waitForLine(/^DISK OK/, Math.min(timeoutMs, 30_000), first.index + 1);
  } catch (e) {
    v.reason = `target disk writer: ${(e as Error).message}`;
  }
  await source.flush();
  await target.flush();
  const fails = [...diskFailures(source).map((f) => `source: ${f}`), ...diskFailures(target).map((f) => `target: ${f}`)];
  if (!v.reason && fails.length > 0) v.reason = fails[0];
  v.ok = v.reason === '';
  return v;
}
