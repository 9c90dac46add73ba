import { basename } from 'node:path';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { policyNames } from '../../core/policies/registry.ts';
import { PAPER_LAUNCH_MS, PAPER_POLICIES, PAPER_WORKLOADS, runFrontier, runPaper, STEADY_FROM_MS } from '../../lab/paper.ts';
import { BarProgress } from '../progress.ts';
import { writeResults } from '../../engine/results-file.ts';
import { paperResults } from '../../lab/results-paper.ts';
import { fmtBytes, formatTable } from '../../lab/table.ts';
import type { Workload } from '../../sim/workload.ts';
import { loadTraceWorkload } from '../../sim/trace-workload.ts';
import { WORKLOAD_NAMES } from '../../sim/workloads/index.ts';
import { durationListFlag, workloadList, intFlag, listFlag, parseFlags } from '../args.ts';
import type { CommandIO } from '../io.ts';
import { canonicalWorkload } from '../../api/workload-names.ts';
import { parseDuration } from '../../transport/rate.ts';
import { EXIT_CODES } from '../exit-codes.ts';

const USAGE = 'presync bench paper [--json] [--quick] [--seeds N] [--workloads a,b] [--policies a,b] [--launch-after 20s,30s] [--no-competing] [--frontier] [--trace FILE,…] [-o|--out FILE]';

const pct = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(1)} %` : String(x));

/** `presync bench <name>`: only `paper` so far. */
export async function benchCommand(argv: string[], io: CommandIO): Promise<number> {
  const [name, ...rest] = argv;
  if (name === 'paper') return benchPaper(rest, io);
  if (name === 'throughput') return (await import('./bench-throughput.ts')).benchThroughput(rest, io);
  if (name === 'qemu') return (await import('./bench-qemu.ts')).benchQemu(rest, io);
  if (name === 'perf') return (await import('./bench-perf.ts')).benchPerf(rest, io);
  if (name === undefined || name === '--help' || name === '-h') {
    io.out(`usage: presync bench <bench> [flags]   (presync bench <bench> --help for its flags)\n\nbenches:\n  paper         the paper's table: transfer reduction vs presync-naive, oracle ratio, residual\n  throughput    full sync of a 1 GiB image over loopback next to cp of the same file\n  qemu          real QEMU VMs over a 1 Gbit/s link: presync vs stock QEMU pre-copy (launch→running, downtime, bytes)\n  perf          scan cost, policy cost, codecs, full-sync throughput, memory overhead, QEMU side by side\n\nExamples:\n  presync bench paper --quick\n  presync bench throughput --mib 256\n  presync bench qemu --reps 3 -o qemu.json\n\n${EXIT_CODES}`);
    return name === undefined ? 2 : 0;
  }
  throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `unknown bench "${name}"; known benches: paper, throughput, qemu, perf`);
}

export async function benchPaper(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      json: { type: 'boolean' },
      quick: { type: 'boolean' },
      seeds: { type: 'string' },
      workloads: { type: 'string' },
      policies: { type: 'string' },
      'launch-after': { type: 'string' },
      'no-competing': { type: 'boolean' },
      frontier: { type: 'boolean' },
      trace: { type: 'string' },
      out: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
    },
    USAGE,
  );
  if (values.help) {
    io.out(`${USAGE}\n\nSimulates a 256 MiB guest on 1 Gbit/s, 1 ms RTT, for each workload × policy × seed × launch moment.\n--quick: one seed, launch at 30 s, the paper's three workloads.\n--trace FILE,…: recorded traces (presync-trace/1, e.g. traces/*.jsonl.gz) as more workloads, next to text-editing, audio and movie unless --workloads says otherwise.\n--frontier: also sweep presync's added-pause budget (traffic vs pause trade-off).\n\nExamples:\n  presync bench paper --quick\n  presync bench paper --workloads text,movie --launch-after 20s,30s -o paper.json\n  presync bench paper --trace traces/vim.jsonl.gz,traces/xz.jsonl.gz --json\n\n${EXIT_CODES}`);
    return 0;
  }
  const quick = values.quick === true;
  const launchMs = durationListFlag(values['launch-after'], 'launch-after', quick ? [30_000] : [...PAPER_LAUNCH_MS], parseDuration);
  // --trace: each recorded trace is one more workload (named trace:<file name>), next to the synthetic ones.
  const traces = new Map<string, Workload>();
  for (const path of (values.trace ?? '').split(',').map((x) => x.trim()).filter(Boolean)) {
    const name = `trace:${basename(path).replace(/\.jsonl(\.gz)?$/, '')}`;
    if (traces.has(name)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--trace: two traces named ${name}; rename one`);
    traces.set(name, await loadTraceWorkload(path, { name }));
  }
  const synthetic = values.trace !== undefined && values.workloads === undefined
    ? ['text-editing', 'audio', 'movie']
    : listFlag(workloadList(values.workloads, canonicalWorkload), 'workloads', WORKLOAD_NAMES, quick ? ['text-editing', 'audio', 'movie'] : PAPER_WORKLOADS);
  const workloads = [...synthetic, ...traces.keys()];
  const workloadOf = traces.size > 0 ? (name: string): Workload | undefined => traces.get(name) : undefined;
  const bar = new BarProgress(io.err, process.stderr.isTTY === true, 'bench paper');
  const policies = listFlag(values.policies, 'policies', policyNames(), PAPER_POLICIES);
  const seeds = intFlag(values.seeds, 'seeds', quick ? 1 : 3, 1, 100);
  const res = runPaper({ workloads, policies, seeds, launchMs, competing: values['no-competing'] !== true, onRun: (d, t) => bar.update(d, t, performance.now()), ...(workloadOf ? { workloadOf } : {}) });
  const frontier = values.frontier
    ? runFrontier({ workloads: workloads.filter((w) => !['idle', 'uniform', 'hotspot'].includes(w)), budgetsMs: [0, 1, 2, 5, 10, 20], seeds, launchMs, ...(workloadOf ? { workloadOf } : {}) })
    : undefined;
  if (values.out) {
    const series = new BarProgress(io.err, process.stderr.isTTY === true, 'representative runs for --out');
    writeResults(
      values.out,
      paperResults(res, { createdBy: `presync bench paper ${argv.join(' ')}`, workloads, policies, seeds, launchMs, ...(workloadOf ? { workloadOf } : {}), ...(frontier ? { frontier } : {}), onRun: (d, t) => series.update(d, t, performance.now()) }),
    );
  }
  if (values.json) {
    io.out(JSON.stringify({ rows: res.rows, competing: res.competing, bounds: res.bounds, ...(frontier ? { frontier } : {}) }) + '\n');
    return 0;
  }
  io.out(`presync bench paper: 256 MiB simulated guest, 1 Gbit/s, 1 ms RTT; ${seeds} seed(s) × launch at ${launchMs.map((l) => `${l / 1000} s`).join(', ')}\n`);
  io.out(`rewrite red. = 1 − bytes sent after each page's first copy ÷ presync-naive's (the paper's measure); added pause = residual at launch − naive's, ms at the link rate (median, p95)\n`);
  io.out(`reduction = 1 − presyncBytes ÷ presync-naive's (initial copy included); steady = same over bytes sent after ${STEADY_FROM_MS / 1000} s\n\n`);
  io.out(
    formatTable(
      ['workload', 'policy', 'rewrite red.', 'paper', 'added pause ms', '÷ oracle', 'reduction', 'steady red.', 'resid p50', 'resid p95', 'launch→run ms', 'wasted pages', 'verified'],
      res.rows.map((r) => [
        r.workload,
        r.policy,
        pct(r.rewriteReduction),
        r.paperReduction === null || r.policy !== 'presync' ? '' : pct(r.paperReduction),
        `${r.addedPauseMs.toFixed(2)} / ${r.addedPauseP95Ms.toFixed(2)}`,
        r.oracleRatio.toFixed(2),
        pct(r.reduction),
        pct(r.steadyReduction),
        r.residualP50,
        r.residualP95,
        r.launchToRunningMs,
        r.wastedPages,
        r.verified ? 'yes' : 'NO',
      ]),
    ) + '\n',
  );
  if (res.bounds.length > 0) {
    io.out(`\nbound: the best any policy that does not know the launch moment can do with ${res.bounds[0].addedPauseMs} ms of added pause averaged over launch moments (from the workload's own future; src/lab/pause-bound.ts)\n\n`);
    io.out(formatTable(['workload', 'rewrite red. ≤', '÷ oracle ≥'], res.bounds.map((b) => [b.workload, pct(b.boundRewriteReduction), b.boundOracleRatio.toFixed(2)])) + '\n');
  }
  if (res.competing.length > 0) {
    io.out('\ncompeting bulk flow on the link during presync (seed 1, launch at 30 s): throughput it loses\n\n');
    io.out(formatTable(['workload', 'policy', 'competing loss', 'presync bytes', 'residual'], res.competing.map((c) => [c.workload, c.policy, pct(c.competingLoss), fmtBytes(c.presyncBytes), c.residualPages])) + '\n');
  }
  if (frontier) {
    io.out('\nfrontier: presync with more pause allowed (hold-back budget addedPauseMs, expected pause added at the link rate)\n\n');
    io.out(
      formatTable(
        ['workload', 'budget ms', 'rewrite red.', 'added pause ms', '÷ oracle', 'reduction'],
        frontier.map((f) => [f.workload, String(f.addedPauseBudgetMs), pct(f.rewriteReduction), `${f.addedPauseMs.toFixed(2)} / ${f.addedPauseP95Ms.toFixed(2)}`, f.oracleRatio.toFixed(2), pct(f.reduction)]),
      ) + '\n',
    );
  }
  return res.rows.every((r) => r.verified) ? 0 : 1;
}
