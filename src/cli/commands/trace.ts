import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { PageSet } from '../../core/pageset.ts';
import { policyNames } from '../../core/policies/registry.ts';
import { DirtyScanner } from '../../guest/dirty-scanner.ts';
import { RamImageReader } from '../../guest/ram-image.ts';
import { BarProgress } from '../progress.ts';
import { makeResults, writeResults, type ResultRun } from '../../engine/results-file.ts';
import { simulateForResults } from '../../lab/results-build.ts';
import { DEFAULT_SCENARIO } from '../../lab/scenario.ts';
import { fmtBytes, formatTable } from '../../lab/table.ts';
import { traceWorkload } from '../../sim/trace-workload.ts';
import { loadTrace, TraceWriter } from '../../sim/trace.ts';
import { parseRate } from '../../transport/rate.ts';
import { initDigest, zeroPageDigest } from '../../native/page-digest.ts';
import { intFlag, listFlag, parseFlags } from '../args.ts';
import { durationFlag } from '../common.ts';
import type { CommandIO } from '../io.ts';
import { sleep } from '../../transport/deadline.ts';

const RECORD_USAGE = 'presync trace record (--image PATH | --qmp SOCKET) [--epoch 100ms] [--duration 60s] [--page-size 4096] -o t.jsonl.gz';
const REPLAY_USAGE = 'presync trace replay TRACE [--policy a,b] [--launch-after 30s] [--epoch 100ms] [--bandwidth 1Gbit/s] [--rtt 1ms] [--seed N] [--json] [-o|--out FILE]';

export async function traceCommand(argv: string[], io: CommandIO): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'record') return traceRecord(rest, io);
  if (sub === 'replay') return traceReplay(rest, io);
  if (sub === undefined || sub === '--help' || sub === '-h') {
    io.out(`usage:\n  ${RECORD_USAGE}\n  ${REPLAY_USAGE}\n\nrecord: scan a live RAM image every epoch and write the pages that changed (presync-trace/1).\nreplay: simulate policies on a recorded trace.\n`);
    return sub === undefined ? 2 : 0;
  }
  throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `unknown trace subcommand "${sub}"; expected record or replay`);
}

export interface RecordImageOptions {
  readonly imagePath: string;
  readonly out: string;
  readonly epochMs: number;
  readonly durationMs: number;
  readonly pageSize?: number;
  readonly source?: string;
  readonly signal?: AbortSignal;
  /** Called after each epoch written (progress). */
  readonly onEpoch?: (tMs: number, dirtyPages: number) => void;
}

/**
 * Records a live image: one full scan as the baseline (its non-zero pages go
 * in the header), then each epoch the pages whose digest changed, stamped
 * with the real time of the scan. A scan that overruns the epoch makes the
 * next line late rather than dropping writes: every change lands in some line.
 */
export async function recordImageTrace(o: RecordImageOptions): Promise<{ epochs: number; dirtyPages: number }> {
  await initDigest();
  const image = RamImageReader.open(o.imagePath, o.pageSize ?? 4096);
  try {
    const { pageSize, pageCount } = image.geometry;
    const scanner = new DirtyScanner(image);
    const start = performance.now();
    scanner.scan();
    const zero = zeroPageDigest(pageSize);
    const nonZero = new PageSet(pageCount);
    for (let p = 0; p < pageCount; p++) if (scanner.digests[p] !== zero) nonZero.add(p);
    const writer = await TraceWriter.open(o.out, { pageSize, pageCount, epochMs: o.epochMs, source: o.source ?? `presync trace record --image ${o.imagePath}`, nonZero });
    let epochs = 0;
    let dirtyPages = 0;
    let lastT = 0;
    try {
      for (let k = 1; ; k++) {
        const due = k * o.epochMs;
        if (due > o.durationMs) break;
        const wait = start + due - performance.now();
        if (wait > 0) await sleep(wait, o.signal);
        if (o.signal?.aborted) break;
        const dirty = await scanner.scanAsync();
        const t = Math.max(lastT + 1, Math.round(performance.now() - start));
        await writer.append(t, dirty);
        lastT = t;
        epochs++;
        const n = dirty.count();
        dirtyPages += n;
        o.onEpoch?.(t, n);
      }
    } finally {
      await writer.close();
    }
    return { epochs, dirtyPages };
  } finally {
    image.close();
  }
}

async function traceRecord(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      image: { type: 'string' },
      qmp: { type: 'string' },
      epoch: { type: 'string' },
      duration: { type: 'string' },
      'page-size': { type: 'string' },
      out: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
    },
    RECORD_USAGE,
  );
  if (values.help) {
    io.out(`${RECORD_USAGE}\n\nScans the image (or, with --qmp, the running VM's memory-backend-file) every epoch with 64-bit page digests\nand writes the pages that changed. Ctrl-C stops early and keeps what was recorded. A .gz name compresses.\n`);
    return 0;
  }
  if (!values.out) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `-o FILE is required\nusage: ${RECORD_USAGE}`);
  if ((values.image === undefined) === (values.qmp === undefined)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `give exactly one of --image PATH and --qmp SOCKET\nusage: ${RECORD_USAGE}`);
  const epochMs = durationFlag(values.epoch, 'epoch') ?? 100;
  const durationMs = durationFlag(values.duration, 'duration') ?? 60_000;
  if (!(epochMs > 0) || !(durationMs >= epochMs)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--epoch must be positive and --duration at least one epoch, got ${epochMs} ms and ${durationMs} ms`);
  const pageSize = intFlag(values['page-size'], 'page-size', 4096, 512, 1 << 21);
  let imagePath = values.image;
  let source: string | undefined;
  if (values.qmp !== undefined) {
    // The VM's RAM is a shared file; presync reads it while the guest runs.
    const { attachVm } = await import('../../qemu/vm.ts');
    const vm = await attachVm(values.qmp);
    vm.qmp.close();
    imagePath = vm.memPath;
    source = `presync trace record --qmp ${values.qmp} (${vm.memPath}, ${vm.machine})`;
  }
  const ac = new AbortController();
  const onSigint = (): void => ac.abort();
  process.once('SIGINT', onSigint);
  const bar = new BarProgress(io.err, process.stderr.isTTY === true, 'recording');
  const total = Math.floor(durationMs / epochMs);
  let done = 0;
  try {
    const r = await recordImageTrace({
      imagePath: imagePath!,
      out: values.out,
      epochMs,
      durationMs,
      pageSize,
      signal: ac.signal,
      ...(source !== undefined ? { source } : {}),
      onEpoch: (t) => bar.update(++done, total, t),
    });
    io.out(`presync trace record: ${r.epochs} epochs of ${epochMs} ms, ${r.dirtyPages} dirty page observations, wrote ${values.out}\n`);
  } finally {
    process.off('SIGINT', onSigint);
  }
  return 0;
}

async function traceReplay(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseFlags(
    argv,
    {
      policy: { type: 'string' },
      'launch-after': { type: 'string' },
      epoch: { type: 'string' },
      bandwidth: { type: 'string' },
      rtt: { type: 'string' },
      seed: { type: 'string' },
      json: { type: 'boolean' },
      out: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
    },
    REPLAY_USAGE,
    true,
  );
  if (values.help) {
    io.out(`${REPLAY_USAGE}\n\nSimulates each policy on the trace's writes (default presync-naive,presync; launch at 30 s or the trace's end if sooner).\nThe link defaults to 1 Gbit/s with 1 ms RTT.\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `give exactly one trace file\nusage: ${REPLAY_USAGE}`);
  const path = positionals[0];
  const trace = await loadTrace(path);
  const workload = traceWorkload(trace, { name: `trace:${path}` });
  const policies = listFlag(values.policy, 'policy', policyNames(), ['presync-naive', 'presync']);
  const epochMs = durationFlag(values.epoch, 'epoch') ?? DEFAULT_SCENARIO.epochMs;
  let bandwidth = DEFAULT_SCENARIO.link.bandwidthBytesPerSec;
  if (values.bandwidth !== undefined) {
    try {
      bandwidth = parseRate(values.bandwidth);
    } catch (e) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--bandwidth: ${(e as Error).message}`);
    }
  }
  const rttMs = durationFlag(values.rtt, 'rtt') ?? DEFAULT_SCENARIO.link.rttMs;
  const seed = intFlag(values.seed, 'seed', 1, 0, 0xffffffff);
  const traceEndMs = trace.epochs.at(-1)?.t ?? DEFAULT_SCENARIO.launchAtMs;
  const launchAtMs = durationFlag(values['launch-after'], 'launch-after') ?? Math.max(epochMs, Math.min(DEFAULT_SCENARIO.launchAtMs, traceEndMs));
  const runs: ResultRun[] = [];
  for (const policy of policies) {
    runs.push(simulateForResults({ workload, policy, seed, geometry: workload.geometry, link: { bandwidthBytesPerSec: bandwidth, rttMs }, launchAtMs, epochMs }, `${workload.name} · ${policy}`));
  }
  if (values.out) {
    writeResults(
      values.out,
      makeResults({
        kind: 'sim',
        createdBy: `presync trace replay ${argv.join(' ')}`,
        params: { trace: path, describe: workload.describe(), geometry: workload.geometry, link: { bandwidthBytesPerSec: bandwidth, rttMs }, launchAtMs, epochMs, seed },
        runs,
      }),
    );
  }
  if (values.json) {
    io.out(JSON.stringify({ trace: path, launchAtMs, runs: runs.map((r) => ({ policy: r.policy, ...r.summary })) }) + '\n');
  } else {
    io.out(`presync trace replay: ${workload.describe()}\n${workload.geometry.pageCount} pages of ${workload.geometry.pageSize} B, ${fmtBytes(bandwidth)}/s, ${rttMs} ms RTT, launch at ${launchAtMs / 1000} s\n\n`);
    io.out(
      formatTable(
        ['policy', 'launch→running ms', 'downtime ms', 'presync bytes', 'final bytes', 'residual pages', 'wasted pages', 'verified'],
        runs.map((r) => {
          const s = r.summary;
          return [r.policy, s.launchToRunningMs ?? NaN, s.downtimeMs ?? NaN, fmtBytes(s.presyncBytes), fmtBytes(s.finalBytes), s.residualPagesAtLaunch ?? NaN, s.wastedPages ?? NaN, s.verified ? 'yes' : 'NO'];
        }),
      ) + '\n',
    );
  }
  return runs.every((r) => r.summary.outcome === 'done') ? 0 : 1;
}
