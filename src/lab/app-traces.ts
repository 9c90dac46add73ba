import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { launchVm } from '../qemu/vm.ts';

/**
 * Traces of the test guest's real programs (test-guest/apps/README.md): boot the
 * guest with `presync.app=NAME`, wait until the program has started and
 * printed its first check, then run `presync trace record --image` on the
 * running VM's RAM file (QEMU serves one QMP client at a time, and this
 * module holds it). Each trace comes with its provenance: the program and the
 * Debian package versions, the command that ran it in the guest, the
 * recording command, the date, the kernel and QEMU.
 */
export const GUEST_APPS = ['vim', 'flac', 'vpx', 'xz', 'sort', 'sqlite'] as const;
export type GuestApp = (typeof GUEST_APPS)[number];

/** What each program is and which Debian packages it comes from (the first is the program's own). */
export const APP_INFO: Readonly<Record<GuestApp, { readonly kind: string; readonly packages: readonly string[]; readonly command: string }>> = {
  vim: { kind: 'text editor', packages: ['vim-tiny', 'vim-common'], command: 'apptools keys 60 | vim.tiny -u NONE -i NONE -N doc.txt (1 MB document, ~8 keys/s, :w every 5 s)' },
  flac: { kind: 'audio decoder', packages: ['flac', 'libflac12', 'libogg0'], command: 'while :; do flac -d -c -s song.flac; done | apptools sink 176400 705600 (PCM at 44.1 kHz 16-bit stereo into a 4 s ring)' },
  vpx: { kind: 'video decoder', packages: ['vpx-tools', 'libvpx7'], command: 'while :; do vpxdec --i420 -o - clip.webm; done | apptools sink 2073600 172800 (320×180 VP8, 24 fps I420 frames into a 2-frame ring)' },
  xz: { kind: 'compressor', packages: ['xz-utils', 'liblzma5'], command: 'xz -4 -T1 -c data.txt > data.xz; xz -d -c data.xz | md5sum (4 MB text, in a loop)' },
  sort: { kind: 'sorter', packages: ['coreutils'], command: 'sort -S 16M lines.txt > sorted.txt; sort -c sorted.txt (200 000 lines, 10 MB, in a loop)' },
  sqlite: { kind: 'database', packages: ['sqlite3', 'libsqlite3-0'], command: 'sqlite3 db.sqlite fed 1 transaction/s: insert 2 000 rows of 200 B, update 500, delete beyond 40 000; VACUUM every 20th' },
};

export interface TraceProvenance {
  readonly file: string;
  readonly program: GuestApp;
  readonly kind: string;
  /** "package version" of the program's Debian packages. */
  readonly packages: readonly string[];
  readonly guestCommand: string;
  readonly recordCommand: string;
  readonly date: string;
  readonly kernel: string;
  readonly qemu: string;
  readonly guestMemMiB: number;
  readonly epochMs: number;
  readonly durationMs: number;
  /** Host load average (1 min) when recording began: TCG's speed, and so the program's, depends on it. */
  readonly hostLoad: number;
}

export interface RecordAppOptions {
  readonly app: GuestApp;
  readonly out: string;
  /** The file name recorded in the provenance (relative to the repository). */
  readonly file: string;
  readonly kernel: string;
  readonly initrd: string;
  /** test-guest/build: apps-versions.txt and kernel.txt written by scripts/build-guest.sh. */
  readonly buildDir: string;
  readonly cli: string;
  readonly memMiB?: number;
  readonly durationMs?: number;
  readonly epochMs?: number;
  /** After the program's first check, let it run this long before recording. Default 5 s. */
  readonly warmupMs?: number;
  readonly hostLoad: number;
}

const run = promisify(execFile);

function versionsOf(buildDir: string, packages: readonly string[]): string[] {
  const lines = readFileSync(join(buildDir, 'apps-versions.txt'), 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
  return packages.map((p) => {
    const l = lines.find((x) => x.split(' ')[0] === p);
    if (!l) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `${p} is not in ${join(buildDir, 'apps-versions.txt')}; rebuild the guest (scripts/build-guest.sh)`);
    return l;
  });
}

export async function recordAppTrace(o: RecordAppOptions): Promise<TraceProvenance> {
  const memMiB = o.memMiB ?? 256;
  const durationMs = o.durationMs ?? 60_000;
  const epochMs = o.epochMs ?? 100;
  const info = APP_INFO[o.app];
  const packages = versionsOf(o.buildDir, info.packages);
  const kernel = readFileSync(join(o.buildDir, 'kernel.txt'), 'utf8').trim();
  const qemu = (await run('qemu-system-x86_64', ['--version'])).stdout.split('\n')[0].trim();
  const dir = mkdtempSync(join(tmpdir(), `presync-apptrace-${o.app}-`));
  const memPath = join('/dev/shm', `presync-apptrace-${o.app}-${process.pid}.ram`);
  const qmpSocket = join(dir, 'qmp.sock');
  const vm = await launchVm({
    memBytes: memMiB << 20,
    ram: { kind: 'file', memPath },
    kernel: o.kernel,
    initrd: o.initrd,
    append: `console=ttyS0 quiet panic=-1 presync.app=${o.app}`,
    qmpSocket,
    serialLog: join(dir, 'serial.log'),
    startTimeoutMs: 60_000,
  });
  try {
    // Boot under TCG on a shared host can take a while; the first check proves the program runs.
    await vm.serial.waitForLine(new RegExp(`^APP ${o.app} `), 240_000);
    await new Promise((r) => setTimeout(r, o.warmupMs ?? 5_000));
    const args = ['trace', 'record', '--image', memPath, '--epoch', `${epochMs}ms`, '--duration', `${durationMs / 1000}s`, '-o', o.out];
    await run(process.execPath, [o.cli, ...args], { timeout: durationMs + 120_000 });
    const checks = vm.serial.matching(new RegExp(`^APP ${o.app} .*`)).map((m) => m.text);
    if (checks.some((c) => /FAIL/.test(c))) throw new PresyncError(ErrorCodes.GUEST, `${o.app} reported a failed check: ${checks.find((c) => /FAIL/.test(c))}`);
    return {
      file: o.file,
      program: o.app,
      kind: info.kind,
      packages,
      guestCommand: info.command,
      recordCommand: `presync trace record --image <the VM's memory-backend-file> --epoch ${epochMs}ms --duration ${durationMs / 1000}s -o ${o.file}`,
      date: new Date().toISOString(),
      kernel,
      qemu,
      guestMemMiB: memMiB,
      epochMs,
      durationMs,
      hostLoad: o.hostLoad,
    };
  } finally {
    await vm.dispose();
    rmSync(memPath, { force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}
