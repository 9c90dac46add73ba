import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { readResults } from '../../engine/results-file.ts';
import {
  collectRuns,
  heatmaps,
  qemuBars,
  reductionRows,
  residualRows,
  seriesDomain,
  trafficRows,
  windowRows,
  workloadsOf,
  type LoadedResults,
} from './data.ts';
import { reportHtml, type Chart } from './html.ts';
import { renderSvg, svgToPng } from './render.ts';
import { timelines } from './timeline.ts';
import { timelineSpec } from './timeline-spec.ts';
import { heatmapSpec, qemuSpec, reductionSpec, residualSpec, trafficSpec, windowSpec } from './specs.ts';

export interface Report {
  readonly html: string;
  readonly charts: readonly Chart[];
  /** What vega said while rendering (captured, not printed). */
  readonly warnings: readonly string[];
}

/** Reads results files; each bad one is a PRESYNC_ERR_BAD_ARGUMENT naming it and the bad field. */
export function loadResultsFiles(paths: readonly string[]): LoadedResults[] {
  if (paths.length === 0) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'give at least one results file (presync-results/1, as written by --out)');
  return paths.map((p) => ({ source: p, results: readResults(p) }));
}

/**
 * Prefixes the SVG's element ids (gradients, clip paths) with the chart's id:
 * inlined side by side in one page, two charts must not share an id.
 */
export function scopeIds(svg: string, prefix: string): string {
  return svg.replace(/\bid="([^"]+)"/g, `id="${prefix}-$1"`).replace(/url\(#([^)]+)\)/g, `url(#${prefix}-$1)`).replace(/href="#([^"]+)"/g, `href="#${prefix}-$1"`);
}

const slug = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'x';

/**
 * Builds the report's charts and page. A chart whose data is absent (no
 * slow-start policy, no heatmap, no QEMU bench) is left out rather than drawn
 * empty.
 */
export async function buildReport(files: readonly LoadedResults[], o: { title?: string; now?: Date } = {}): Promise<Report> {
  const runs = collectRuns(files);
  const domain = seriesDomain(runs);
  const warn = { warnings: [] as string[] };
  const charts: Chart[] = [];
  const add = async (id: string, title: string, caption: string, spec: Parameters<typeof renderSvg>[0]): Promise<void> => {
    charts.push({ id, title, caption, svg: scopeIds(await renderSvg(spec, warn), id) });
  };
  const withSeries = runs.filter((r) => r.run.series.length > 0);
  const workloads = workloadsOf(withSeries);

  const reduction = reductionRows(files, runs);
  if (reduction.length > 0) {
    await add(
      'chart-reduction',
      'Transfer reduction per workload',
      "Bytes sent during presync, as a reduction against presync-naive on the same workload, seed and launch moment (DESIGN.md's definition). Grey bars are the paper's published figures (50.5 %, 63.9 %, 65.6 %); the others are measured here. Higher is better; the oracle, which knows future writes, shows the most any policy could save.",
      reductionSpec(reduction, domain),
    );
  }
  const qemu = qemuBars(runs);
  if (qemu.length > 0) {
    await add(
      'chart-qemu',
      'Real QEMU: stock vs presync',
      "Launch-to-running and downtime of real QEMU migrations from the QEMU bench, stock pre-copy (QEMU's own migration) beside presync: the bar is the median, each dot a run, a red ✗ a run whose guest failed its check after the migration (it did not carry on from where the source stopped). The paper's claim is within 1 s against at least 7 s.",
      qemuSpec(qemu, domain),
    );
  }
  const tl = timelines(runs);
  if (tl.length > 0) {
    await add(
      'chart-timeline',
      'Migration timelines',
      'Every migration in the results, one row each: how long presync ran before the launch (left, seconds), then where the time from the launch until the guest runs on the target went (middle, milliseconds), phase by phase as far as the results file records them, with the measured pause outlined in red; on the right the launch → running time, the pause, and any failure (a migration whose guest then failed its check is a failure, not done).',
      timelineSpec(tl, domain),
    );
  }
  if (withSeries.length > 0) {
    await add(
      'chart-traffic',
      'Traffic over time',
      'Bytes each policy hands to the wire, as a rate in 0.5 s bins, on a log scale so that the few Mbit/s of keeping up with a light guest do not vanish under the initial copy. The first seconds are the initial copy of every non-zero page; after that, the line is the cost of keeping up with the guest. A tall line after the launch is the live rounds and the final copy.',
      trafficSpec(trafficRows(withSeries), workloads, domain),
    );
    const win = windowRows(withSeries);
    if (win.length > 0) {
      const ww = workloadsOf(withSeries.filter((r) => win.some((w) => w.series === r.series && w.workload === r.run.workload)));
      await add(
        'chart-window',
        'Slow-start window',
        'The per-epoch send budget of the slow-start policies (diag.windowBytes): it doubles while the link and the guest keep up, grows linearly past the threshold, and is cut when the round-trip time or the guest slowdown says the sync is hurting.',
        windowSpec(win, ww, domain),
      );
    }
    const res = residualRows(withSeries);
    await add(
      'chart-residual',
      'Residual over time',
      'Pages whose current content the target lacks, on a log scale (0, then decades). The dashed rule is the launch: the value where each line crosses it is what the pause must still copy. A policy that holds back pages likely to be rewritten keeps a small, steady residual instead of chasing every write.',
      residualSpec(res.rows, res.launches, workloads, domain),
    );
  }
  for (const h of heatmaps(runs)) {
    await add(
      `chart-heat-${slug(h.workload)}`,
      `Dirty-page heatmap: ${h.workload}`,
      `Where in guest memory (vertical, MiB offset) and when (horizontal) the guest wrote: darker cells hold more pages written per ${h.regionPages}-page region per ${h.binMs / 1000} s bin (max ${h.maxPages}). Horizontal bands are hot regions the predictor learns to hold back; scattered dots are cold pages worth sending once.`,
      heatmapSpec(h),
    );
  }
  const html = reportHtml({ title: o.title ?? 'presync report', files, runs, charts, generatedAt: (o.now ?? new Date()).toISOString() });
  return { html, charts, warnings: warn.warnings };
}

function writeAtomic(path: string, data: string | Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/** Writes the report, and with pngDir one PNG per chart named by its id. Returns the files written. */
export function writeReport(report: Report, htmlPath: string, pngDir?: string): string[] {
  const written: string[] = [];
  try {
    writeAtomic(htmlPath, report.html);
    written.push(htmlPath);
    if (pngDir !== undefined) {
      for (const c of report.charts) {
        const p = join(pngDir, `${c.id}.png`);
        writeAtomic(p, svgToPng(c.svg));
        written.push(p);
      }
    }
  } catch (e) {
    if (e instanceof PresyncError) throw e;
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `cannot write the report: ${(e as Error).message}`, { cause: e });
  }
  return written;
}
