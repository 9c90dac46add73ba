import { makeResults, runRecord, writeResults } from '../../engine/results-file.ts';
import { runThroughputBench } from '../../lab/throughput-bench.ts';
import { intFlag, parseFlags } from '../args.ts';
import { jsonLine } from '../common.ts';
import type { CommandIO } from '../io.ts';

const USAGE = 'presync bench throughput [--mib N] [--dir DIR] [--json] [-o|--out FILE]';

export async function benchThroughput(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(argv, { mib: { type: 'string' }, dir: { type: 'string' }, json: { type: 'boolean' }, out: { type: 'string', short: 'o' }, help: { type: 'boolean', short: 'h' } }, USAGE);
  if (values.help) {
    io.out(`${USAGE}\n\nSyncs an image (default 1024 MiB) over loopback, unshaped, and times cp of the same file in the same run.\n`);
    return 0;
  }
  const mib = intFlag(values.mib, 'mib', 1024, 1, 65536);
  const r = await runThroughputBench({ bytes: mib * 1024 * 1024, ...(values.dir ? { dir: values.dir } : {}) });
  const { migration, ...figures } = r;
  if (values.out) {
    writeResults(
      values.out,
      makeResults({
        kind: 'migration',
        createdBy: `presync bench throughput ${argv.join(' ')}`,
        params: { imageBytes: r.imageBytes, cpMs: r.cpMs, cpBytesPerSec: r.cpBytesPerSec, syncMs: r.syncMs, syncBytesPerSec: r.syncBytesPerSec, ratioVsCp: r.ratioVsCp },
        runs: [runRecord('real', migration, { label: `throughput ${mib} MiB · presync-naive (real)`, workload: `throughput-${mib}MiB`, policy: 'presync-naive', seed: null })],
      }),
    );
  }
  if (values.json) io.out(jsonLine(figures));
  else {
    const gb = (b: number) => (b / 1e9).toFixed(2);
    io.out(
      `image ${mib} MiB\n` +
        `cp:            ${r.cpMs.toFixed(0)} ms  ${gb(r.cpBytesPerSec)} GB/s\n` +
        `presync sync:  ${r.syncMs.toFixed(0)} ms  ${gb(r.syncBytesPerSec)} GB/s  (whole migration ${r.totalMs.toFixed(0)} ms, verified ${r.verified})\n` +
        `ratio presync ÷ cp: ${r.ratioVsCp.toFixed(3)}\n`,
    );
  }
  return r.verified ? 0 : 1;
}
