import { policyNames } from '../../core/policies/registry.ts';
import { DEMO_WORKLOADS, runDemo } from '../../lab/demo.ts';
import { makeResults, writeResults } from '../../engine/results-file.ts';
import { simulateForResults } from '../../lab/results-build.ts';
import { DEFAULT_SCENARIO } from '../../lab/scenario.ts';
import { fmtBytes, formatTable } from '../../lab/table.ts';
import { WORKLOAD_NAMES } from '../../sim/workloads/index.ts';
import { canonicalWorkload } from '../../api/workload-names.ts';
import { intFlag, listFlag, parseFlags, workloadList } from '../args.ts';
import { durationFlag } from '../common.ts';
import { EXIT_CODES } from '../exit-codes.ts';
import { formatDuration } from '../progress.ts';
import type { CommandIO } from '../io.ts';

const USAGE = 'presync demo [--json] [--seed N] [--workloads a,b] [--policies a,b] [--launch-after DURATION] [-o|--out FILE]';

export async function demoCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      json: { type: 'boolean' },
      seed: { type: 'string' },
      workloads: { type: 'string' },
      policies: { type: 'string' },
      'launch-after': { type: 'string' },
      out: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
    },
    USAGE,
  );
  if (values.help) {
    io.out(
      `${USAGE}\n\nSimulates a 256 MiB guest on a 1 Gbit/s, 1 ms RTT link: 30 s of presync (--launch-after), then launch,\n` +
        `for each workload (text, audio, movie; also idle, uniform, hotspot) and policy. Seeded: the same output every run.\n\n` +
        `Examples:\n  presync demo\n  presync demo --workloads movie --policies precopy,presync --launch-after 10s\n  presync demo --json -o demo.json\n\n${EXIT_CODES}`,
    );
    return 0;
  }
  const opts = {
    seed: intFlag(values.seed, 'seed', 1, 0, 0xffffffff),
    workloads: listFlag(workloadList(values.workloads, canonicalWorkload), 'workloads', WORKLOAD_NAMES, DEMO_WORKLOADS),
    policies: listFlag(values.policies, 'policies', policyNames(), policyNames()),
    launchAtMs: durationFlag(values['launch-after'], 'launch-after') ?? 30_000,
  };
  const rows = runDemo(opts);
  if (values.out) {
    // The table's runs again with their series kept (runDemo drops them to stay fast).
    const runs = opts.workloads.flatMap((workload) => opts.policies.map((policy) => simulateForResults({ ...DEFAULT_SCENARIO, workload, policy, seed: opts.seed, launchAtMs: opts.launchAtMs })));
    writeResults(values.out, makeResults({ kind: 'sim', createdBy: `presync demo ${argv.join(' ')}`, params: { ...opts, geometry: DEFAULT_SCENARIO.geometry, link: DEFAULT_SCENARIO.link }, runs, table: rows.map((r) => ({ ...r })) }));
  }
  if (values.json) {
    io.out(JSON.stringify({ results: rows }) + '\n');
    return 0;
  }
  io.out(`presync demo: 256 MiB simulated guest, 1 Gbit/s link, 1 ms RTT, launch after ${formatDuration(opts.launchAtMs)} of presync\n\n`);
  for (const w of new Set(rows.map((r) => r.workload))) {
    io.out(`workload: ${w}\n`);
    io.out(
      formatTable(
        ['policy', 'launch→running ms', 'downtime ms', 'presync bytes', 'final bytes', 'residual pages', 'verified'],
        rows
          .filter((r) => r.workload === w)
          .map((r) => [r.policy, r.launchToRunningMs ?? NaN, r.downtimeMs ?? NaN, fmtBytes(r.presyncBytes), fmtBytes(r.finalBytes), r.residualPagesAtLaunch, r.verified ? 'yes' : 'NO']),
      ) + '\n\n',
    );
  }
  return 0;
}
