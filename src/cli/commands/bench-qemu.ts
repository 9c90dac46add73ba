/**
 * `presync bench qemu`: presync against stock QEMU pre-copy on real VMs over
 * a real 1 Gbit/s link (src/lab/qemu-bench.ts does the work; this file reads
 * flags and prints).
 */
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { GUEST_APPS } from '../../lab/app-traces.ts';
import { GUEST_WORKLOADS, qemuBenchJson, qemuBenchResults, runQemuBench, UNCAPPED_BANDWIDTH } from '../../lab/qemu-bench.ts';
import { writeResults } from '../../engine/results-file.ts';
import { fmtBytes, formatTable } from '../../lab/table.ts';
import { policyNames } from '../../core/policies/registry.ts';
import { parseRate } from '../../transport/rate.ts';
import { intFlag, listFlag, workloadList, parseFlags } from '../args.ts';
import { durationFlag } from '../common.ts';
import type { CommandIO } from '../io.ts';
import { shortWorkload } from '../../api/workload-names.ts';
import { parseMemory } from './qemu.ts';
import { benchQemuReal } from './bench-qemu-real.ts';

const USAGE =
  'presync bench qemu [--reps N] [--json] [--workloads text,audio,movie|vim,flac,vpx,xz,sort,sqlite] [--memory 256M] [--presync-for 15s] [--link netns|shaper] ' +
  '[--stock-bandwidth uncapped|32MiB] [--policy NAME] [--accel tcg|kvm] [--warmup N] [--vm test|real [--disk shared] [--client-rto-min DURATION]] [-o|--out FILE]';

/** `32MiB`, `32MiB/s`, `1gbit`, `uncapped`: bytes/s for QEMU's max-bandwidth. */
export function stockBandwidthFlag(value: string | undefined): number {
  if (value === undefined || value === 'uncapped' || value === 'none') return UNCAPPED_BANDWIDTH;
  // A size read as "per second": QEMU's own max-bandwidth is written that way (32M).
  const text = /[kmgt]?i?B$/i.test(value.trim()) && !/bit$/i.test(value.trim()) ? `${value.trim()}/s` : value;
  try {
    return Math.round(parseRate(text));
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--stock-bandwidth: ${(e as Error).message}`);
  }
}

const ms = (x: number | null): string => (x === null ? '—' : x.toFixed(0));

export async function benchQemu(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      reps: { type: 'string' },
      json: { type: 'boolean' },
      workloads: { type: 'string' },
      memory: { type: 'string' },
      'presync-for': { type: 'string' },
      link: { type: 'string' },
      'stock-bandwidth': { type: 'string' },
      accel: { type: 'string' },
      policy: { type: 'string' },
      warmup: { type: 'string' },
      vm: { type: 'string' },
      disk: { type: 'string' },
      'client-rto-min': { type: 'string' },
      out: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
    },
    USAGE,
  );
  if (values.help) {
    io.out(
      `${USAGE}\n\nMigrates the test guest (test-guest/README.md) with presync and with QEMU's own pre-copy, N times per workload each, over two network\n` +
        `namespaces joined by veth with tbf 1gbit (--link netns, needs root and iproute2), or over loopback with presync's shaper and QEMU\n` +
        `max-bandwidth at 1 Gbit/s (--link shaper; the fallback when namespaces cannot be made). Prints the medians of launch→running,\n` +
        `downtime (source STOP → target RESUME, QMP timestamps) and bytes, and stock ÷ presync. --out writes presync-results/1 for presync report.\n` +
        `--stock-bandwidth 32MiB reproduces QEMU's 2012 default cap (the paper's era). See docs/qemu.md.\n` +
        `--vm real: the real VM instead (1 GiB, ext4 root on virtio-blk, virtio-net on a bridged tap; scripts/build-real-vm.sh) with a TCP client\n` +
        `measuring the blackout it sees and the guest's disk writer checking its records; --disk shared (the default) opens one image on both sides.\n` +
        `--client-rto-min 20ms lowers the client's TCP minimum retransmission timeout (default the kernel's 200 ms), which bounds the gap it sees.\n`,
    );
    return 0;
  }
  const vm = values.vm ?? 'test';
  if (vm !== 'test' && vm !== 'real') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--vm must be test or real, got "${vm}"`);
  if (vm === 'real') return benchQemuReal(values, argv, io, stockBandwidthFlag(values['stock-bandwidth']));
  if (values.disk !== undefined || values['client-rto-min'] !== undefined) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, '--disk and --client-rto-min need --vm real (the test guest has no disk and no NIC)');
  const link = values.link ?? 'auto';
  if (link !== 'netns' && link !== 'shaper' && link !== 'auto') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--link must be netns or shaper, got "${link}"`);
  const accel = values.accel ?? 'tcg';
  if (accel !== 'tcg' && accel !== 'kvm') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--accel must be tcg or kvm, got "${accel}"`);
  const presyncForMs = durationFlag(values['presync-for'], 'presync-for') ?? 15_000;
  if (presyncForMs < 1000) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--presync-for must be at least 1s (the first full copy needs time), got ${presyncForMs} ms`);
  const opts = {
    workloads: listFlag(workloadList(values.workloads, shortWorkload), 'workloads', [...GUEST_WORKLOADS, ...GUEST_APPS], ['text', 'audio', 'movie']),
    reps: intFlag(values.reps, 'reps', 3, 1, 100),
    warmup: intFlag(values.warmup, 'warmup', 0, 0, 10),
    memBytes: parseMemory(values.memory),
    presyncForMs,
    link: link as 'netns' | 'shaper' | 'auto',
    stockBandwidthBytesPerSec: stockBandwidthFlag(values['stock-bandwidth']),
    accel: accel as 'tcg' | 'kvm',
    policy: listFlag(values.policy, 'policy', policyNames(), ['presync'])[0],
    onProgress: (line: string) => io.err(`bench qemu: ${line}\n`),
  };
  const res = await runQemuBench(opts);
  // With --json, stdout carries only the JSON line; the table goes to stderr.
  const text = (t: string): void => (values.json ? io.err(t) : io.out(t));
  if (values.out) writeResults(values.out, qemuBenchResults(res, `presync bench qemu ${argv.join(' ')}`.trim()));
  const o = res.options;
  const cap = o.stockBandwidthBytesPerSec >= UNCAPPED_BANDWIDTH ? 'uncapped' : `${fmtBytes(o.stockBandwidthBytesPerSec)}/s`;
  text(`presync bench qemu: ${o.memBytes / 2 ** 20} MiB guest, ${o.accel}, ${o.reps} rep(s), policy ${o.policy}, presync for ${o.presyncForMs / 1000} s before launch, stock max-bandwidth ${cap}\n`);
  text(`link: ${res.link.kind}: ${res.link.description}\n`);
  text(`medians; downtime = source STOP → target RESUME (QMP); ratio = stock ÷ presync launch→running\n\n`);
  text(
    formatTable(
      ['workload', 'presync launch→run ms', 'stock launch→run ms', 'ratio', 'presync downtime ms', 'stock downtime ms', 'presync bytes', 'stock bytes', 'presync guest', 'stock guest'],
      res.workloads.map((w) => [
        w.workload,
        ms(w.presyncLaunchToRunningMsMedian),
        ms(w.stockLaunchToRunningMsMedian),
        w.ratio === null ? '—' : `${w.ratio.toFixed(1)}×`,
        ms(w.presyncDowntimeMsMedian),
        ms(w.stockDowntimeMsMedian),
        w.presyncBytesMedian === null ? '—' : fmtBytes(w.presyncBytesMedian),
        w.stockBytesMedian === null ? '—' : fmtBytes(w.stockBytesMedian),
        w.guestOk ? 'OK' : 'FAILED',
        w.stockGuestOk ? 'OK' : 'FAILED',
      ]),
    ) + '\n',
  );
  const failed = res.runs.filter((r) => r.outcome !== 'done' || r.guest?.ok !== true);
  for (const r of failed) {
    text(`  ${r.workload} #${r.rep + 1} ${r.kind}: ${r.outcome !== 'done' ? `${r.outcome}: ${r.error?.code}: ${r.error?.message}` : `guest check: ${r.guest?.reason}`}\n`);
    const tail = r.guest?.targetConsoleTail?.slice(-12) ?? [];
    if (tail.length > 0) text(`    target console, last lines:\n${tail.map((l) => `      | ${l}`).join('\n')}\n`);
  }
  if (values.json) io.out(JSON.stringify(qemuBenchJson(res)) + '\n');
  // The exit status is presync's: a stock QEMU guest that failed its check is QEMU's result, printed above.
  return res.workloads.every((w) => w.guestOk) ? 0 : 1;
}
