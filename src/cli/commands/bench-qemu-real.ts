/**
 * `presync bench qemu --vm real`: flags and the printed table for the real
 * VM's bench (src/lab/real-vm-bench.ts does the work).
 */
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { policyNames } from '../../core/policies/registry.ts';
import { writeResults } from '../../engine/results-file.ts';
import { DISK_MODES, REAL_VM_WORKLOADS, realVmBenchJson, realVmBenchResults, runRealVmBench, type DiskModeName } from '../../lab/real-vm-bench.ts';
import { fmtBytes, formatTable } from '../../lab/table.ts';
import { netnsUnavailable } from '../../lab/netns.ts';
import { intFlag, listFlag, workloadList } from '../args.ts';
import { durationFlag } from '../common.ts';
import type { CommandIO } from '../io.ts';
import { shortWorkload } from '../../api/workload-names.ts';
import { parseMemory } from './qemu.ts';

type Flags = Record<string, string | boolean | undefined>;
const str = (v: string | boolean | undefined): string | undefined => (typeof v === 'string' ? v : undefined);
const ms = (x: number | null): string => (x === null ? '—' : x.toFixed(0));
const yes = (b: boolean): string => (b ? 'OK' : 'FAILED');

/** `stockBandwidth`: --stock-bandwidth, already parsed by bench qemu. */
export async function benchQemuReal(values: Flags, argv: string[], io: CommandIO, stockBandwidth: number): Promise<number> {
  if (str(values.link) !== undefined && values.link !== 'netns') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, '--vm real runs in network namespaces only (--link netns): its NIC needs the lab network');
  const why = netnsUnavailable();
  if (why) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--vm real needs network namespaces for the lab network: ${why}`);
  if (values.warmup !== undefined) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, '--warmup is not supported with --vm real');
  const disk = str(values.disk) ?? 'shared';
  if (!(DISK_MODES as readonly string[]).includes(disk)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--disk must be one of ${DISK_MODES.join(', ')}, got "${disk}"`);
  const accel = str(values.accel) ?? 'tcg';
  if (accel !== 'tcg' && accel !== 'kvm') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--accel must be tcg or kvm, got "${accel}"`);
  const presyncForMs = durationFlag(str(values['presync-for']), 'presync-for') ?? 15_000;
  if (presyncForMs < 1000) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--presync-for must be at least 1s (the first full copy needs time), got ${presyncForMs} ms`);
  const rto = durationFlag(str(values['client-rto-min']), 'client-rto-min');
  if (rto !== undefined && (rto < 1 || rto > 10_000)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--client-rto-min must be between 1ms and 10s, got ${rto} ms`);
  const res = await runRealVmBench({
    workloads: listFlag(workloadList(str(values.workloads), shortWorkload), 'workloads', [...REAL_VM_WORKLOADS], ['text', 'movie']),
    reps: intFlag(str(values.reps), 'reps', 3, 1, 100),
    memBytes: parseMemory(str(values.memory) ?? '1G'),
    presyncForMs,
    accel,
    disk: disk as DiskModeName,
    ...(rto !== undefined ? { clientRtoMinMs: rto } : {}),
    stockBandwidthBytesPerSec: stockBandwidth,
    policy: listFlag(str(values.policy), 'policy', policyNames(), ['presync'])[0],
    onProgress: (line: string) => io.err(`bench qemu --vm real: ${line}\n`),
  });
  if (typeof values.out === 'string') writeResults(values.out, realVmBenchResults(res, `presync bench qemu ${argv.join(' ')}`.trim()));
  const o = res.options;
  // With --json, stdout carries only the JSON line; the table goes to stderr.
  const text = (t: string): void => (values.json === true ? io.err(t) : io.out(t));
  text(`presync bench qemu --vm real: ${o.memBytes / 2 ** 20} MiB real VM (${res.versions.split('\n')[0]}), ${o.accel}, ${o.reps} rep(s), policy ${o.policy}, disk ${o.disk}, client TCP rto_min ${o.clientRtoMinMs === null ? 'kernel default (200 ms)' : `${o.clientRtoMinMs} ms`}, presync for ${o.presyncForMs / 1000} s before launch\n`);
  text(`network: ${res.network}\n`);
  text(`medians; pause = source STOP → target RESUME (QMP); client gap = the longest gap between echo answers, seen from the client namespace, that overlaps the pause\n\n`);
  text(
    formatTable(
      ['workload', 'presync launch→run ms', 'stock launch→run ms', 'ratio', 'presync pause ms', 'stock pause ms', 'presync client gap ms', 'stock client gap ms', 'connection', 'presync bytes', 'stock bytes', 'disk', 'presync guest', 'stock guest'],
      res.workloads.map((w) => [
        w.workload,
        ms(w.presyncLaunchToRunningMsMedian),
        ms(w.stockLaunchToRunningMsMedian),
        w.ratio === null ? '—' : `${w.ratio.toFixed(1)}×`,
        ms(w.presyncDowntimeMsMedian),
        ms(w.stockDowntimeMsMedian),
        ms(w.presyncClientGapMsMedian),
        ms(w.stockClientGapMsMedian),
        w.connectionSurvived ? 'survived' : 'LOST',
        w.presyncBytesMedian === null ? '—' : fmtBytes(w.presyncBytesMedian),
        w.stockBytesMedian === null ? '—' : fmtBytes(w.stockBytesMedian),
        yes(w.diskVerified),
        yes(w.guestOk),
        yes(w.stockGuestOk),
      ]),
    ) + '\n',
  );
  for (const r of res.runs.filter((x) => x.outcome !== 'done' || x.guest?.ok !== true || x.disk?.ok !== true || x.client?.connectionSurvived !== true)) {
    text(`  ${r.workload} #${r.rep + 1} ${r.kind}: ${r.outcome !== 'done' ? `${r.outcome}: ${r.error?.code}: ${r.error?.message}` : `guest: ${r.guest?.reason || 'ok'}; disk: ${r.disk?.reason || 'ok'}; client: ${r.client?.error ?? 'ok'}`}\n`);
  }
  if (values.json === true) io.out(JSON.stringify(realVmBenchJson(res)) + '\n');
  return res.workloads.every((w) => w.guestOk && w.diskVerified && w.connectionSurvived) ? 0 : 1;
}
