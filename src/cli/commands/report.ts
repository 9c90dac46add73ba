import { buildReport, loadResultsFiles, writeReport } from '../../lab/report/build.ts';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { parseFlags } from '../args.ts';
import type { CommandIO } from '../io.ts';

const USAGE = 'presync report RESULTS.json… -o report.html [--png DIR] [--title TEXT]';

export async function reportCommand(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseFlags(
    argv,
    {
      out: { type: 'string', short: 'o' },
      png: { type: 'string' },
      title: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    USAGE,
    true,
  );
  if (values.help) {
    io.out(
      `${USAGE}\n\nOne self-contained HTML file (no script, no network) with SVG charts rendered here, from presync-results/1 files\n` +
        `(written by --out of bench paper, demo, migrate, qemu migrate, trace replay and bench qemu). --png DIR also writes each chart as a PNG.\n\n` +
        `On the page: transfer reduction, stock QEMU vs presync, a timeline of every migration (phases, the pause outlined),\n` +
        `traffic, slow-start window, residual, dirty-page heatmaps, and every run (failures, including failed guest checks, in red).\n` +
        `Each policy has one colour on every chart (docs/report.md).\n\n` +
        `Examples:\n  presync report paper.json -o report.html\n  presync report results/qemu-bench.json migration.json -o r.html --png charts/\n`,
    );
    return 0;
  }
  if (!values.out) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `-o report.html is required\nusage: ${USAGE}`);
  if (positionals.length === 0) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `give at least one results file\nusage: ${USAGE}`);
  const files = loadResultsFiles(positionals);
  const report = await buildReport(files, values.title !== undefined ? { title: values.title } : {});
  const written = writeReport(report, values.out, values.png);
  io.out(`presync report: ${report.charts.length} chart(s) from ${files.length} file(s); wrote ${written.join(', ')}\n`);
  return 0;
}
