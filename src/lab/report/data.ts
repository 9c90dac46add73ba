import { PAPER_REPORTED } from '../paper.ts';
import type { ResultRun, ResultsFile } from '../../engine/results-file.ts';
import { PAPER_SOURCE_LABEL } from './palette.ts';
import { runStatus } from './status.ts';

/**
 * Turns results files into the flat rows the charts draw. Pure: no I/O, no
 * rendering, so what each chart shows is unit-tested apart from vega.
 */
export interface LoadedResults {
  /** Where it came from (file path), for the report's header. */
  readonly source: string;
  readonly results: ResultsFile;
}

export interface RunRef {
  readonly source: string;
  readonly kind: ResultsFile['kind'];
  readonly run: ResultRun;
  /** The file's params (e.g. the QEMU bench's presyncForMs). */
  readonly params: Readonly<Record<string, unknown>>;
  /** The legend entry: the policy, marked "(real)" for the real shell when both shells are present. */
  readonly series: string;
}

export { PAPER_SOURCE_LABEL };

export function collectRuns(files: readonly LoadedResults[]): RunRef[] {
  const all = files.flatMap((f) => f.results.runs.map((run) => ({ source: f.source, kind: f.results.kind, params: f.results.params, run })));
  const shells = new Set(all.map((r) => r.run.shell));
  return all.map((r) => ({ ...r, series: shells.size > 1 && r.run.shell === 'real' ? `${r.run.policy} (real)` : r.run.policy }));
}

/** Series names in first-seen order: one colour per policy across every chart. */
export function seriesDomain(runs: readonly RunRef[]): string[] {
  return [...new Set(runs.map((r) => r.series))];
}

export function workloadsOf(runs: readonly RunRef[]): string[] {
  return [...new Set(runs.map((r) => r.run.workload))];
}

/** When the launch came: the run's launchAtMs, else the end of the last presync step. */
export function launchMsOf(run: ResultRun): number | null {
  if (typeof run.launchAtMs === 'number') return run.launchAtMs;
  let last: number | null = null;
  for (const p of run.series) {
    if (p.phase === 'launched') return last;
    last = p.tMs;
  }
  return null;
}

export interface TrafficRow {
  readonly workload: string;
  readonly series: string;
  /** Start of the bin, seconds. */
  readonly tS: number;
  readonly mbitPerSec: number;
}

/**
 * Bytes handed to the wire, summed into bins of binMs and shown as a rate.
 * A step's bytes land in the bin where the step ended; binning smooths the
 * short steps of the live rounds into a readable line.
 */
export function trafficRows(runs: readonly RunRef[], binMs = 500): TrafficRow[] {
  const out: TrafficRow[] = [];
  for (const r of runs) {
    const bins = new Map<number, number>();
    for (const p of r.run.series) {
      const b = Math.max(0, Math.ceil(p.tMs / binMs) - 1);
      bins.set(b, (bins.get(b) ?? 0) + p.sentBytes);
    }
    const last = Math.max(-1, ...bins.keys());
    for (let b = 0; b <= last; b++) {
      out.push({ workload: r.run.workload, series: r.series, tS: (b * binMs) / 1000, mbitPerSec: ((bins.get(b) ?? 0) * 8) / (binMs / 1000) / 1e6 });
    }
  }
  return out;
}

export interface WindowRow {
  readonly workload: string;
  readonly series: string;
  readonly tS: number;
  readonly windowMiB: number;
}

/** The slow-start window (diag.windowBytes) of the policies that report one. */
export function windowRows(runs: readonly RunRef[]): WindowRow[] {
  const out: WindowRow[] = [];
  for (const r of runs) {
    for (const p of r.run.series) {
      const w = p.diag?.windowBytes;
      if (typeof w === 'number' && Number.isFinite(w) && w >= 0) out.push({ workload: r.run.workload, series: r.series, tS: p.tMs / 1000, windowMiB: w / 2 ** 20 });
    }
  }
  return out;
}

export interface ResidualRow {
  readonly workload: string;
  readonly series: string;
  readonly tS: number;
  readonly stalePages: number;
}

export interface LaunchRow {
  readonly workload: string;
  readonly series: string;
  readonly tS: number;
}

/** Pages the target lacks over time (stalePages), and each run's launch moment. */
export function residualRows(runs: readonly RunRef[]): { rows: ResidualRow[]; launches: LaunchRow[] } {
  const rows: ResidualRow[] = [];
  const launches: LaunchRow[] = [];
  for (const r of runs) {
    for (const p of r.run.series) rows.push({ workload: r.run.workload, series: r.series, tS: p.tMs / 1000, stalePages: p.stalePages });
    const l = launchMsOf(r.run);
    if (l !== null) launches.push({ workload: r.run.workload, series: r.series, tS: l / 1000 });
  }
  return { rows, launches };
}

export interface HeatCell {
  readonly tS: number;
  readonly tEndS: number;
  readonly region: number;
  /** First page of the region, as an offset in MiB of guest memory. */
  readonly fromMiB: number;
  readonly toMiB: number;
  readonly pages: number;
}

export interface Heatmap {
  readonly workload: string;
  readonly label: string;
  readonly regionPages: number;
  readonly binMs: number;
  readonly cells: HeatCell[];
  readonly maxPages: number;
}

/**
 * One heatmap per workload (the writes do not depend on the policy, so the
 * first run of a workload that carries one stands for all). Empty cells are
 * left out: the background reads as zero.
 */
export function heatmaps(runs: readonly RunRef[], pageSize = 4096): Heatmap[] {
  const seen = new Set<string>();
  const out: Heatmap[] = [];
  for (const r of runs) {
    const h = r.run.dirtyHeat;
    if (!h || seen.has(r.run.workload)) continue;
    seen.add(r.run.workload);
    const cells: HeatCell[] = [];
    let maxPages = 0;
    const mib = (page: number): number => (page * pageSize) / 2 ** 20;
    h.counts.forEach((row, bin) => {
      row.forEach((pages, region) => {
        if (pages <= 0) return;
        maxPages = Math.max(maxPages, pages);
        cells.push({
          tS: (bin * h.binMs) / 1000,
          tEndS: ((bin + 1) * h.binMs) / 1000,
          region,
          fromMiB: mib(region * h.regionPages),
          toMiB: mib(Math.min(h.pageCount, (region + 1) * h.regionPages)),
          pages,
        });
      });
    });
    out.push({ workload: r.run.workload, label: r.run.label, regionPages: h.regionPages, binMs: h.binMs, cells, maxPages });
  }
  return out;
}

export interface ReductionRow {
  readonly workload: string;
  /** "paper (Tang et al. 2012)" or a policy name. */
  readonly source: string;
  /** 1 − presyncBytes ÷ presync-naive's, as a percentage. */
  readonly percent: number;
}

/**
 * Transfer reduction per workload: from a paper table when one is given (its
 * medians over seeds × launch moments), otherwise from the runs themselves
 * against the presync-naive run of the same workload, shell, seed and launch.
 * The paper's figure sits beside each of its three workloads.
 */
export function reductionRows(files: readonly LoadedResults[], runs: readonly RunRef[]): ReductionRow[] {
  const out: ReductionRow[] = [];
  const tableRows = files.flatMap((f) => f.results.table ?? []).filter((t) => t.section === 'table' && typeof t.reduction === 'number');
  const measured = new Set<string>();
  for (const t of tableRows) {
    const workload = String(t.workload);
    const policy = String(t.policy);
    if (policy === 'presync-naive') continue;
    measured.add(workload);
    out.push({ workload, source: policy, percent: 100 * (t.reduction as number) });
  }
  for (const r of runs) {
    const w = r.run.workload;
    if (measured.has(w) || r.run.policy === 'presync-naive') continue;
    const naive = runs.find(
      (n) => n.run.policy === 'presync-naive' && n.run.workload === w && n.run.shell === r.run.shell && n.run.seed === r.run.seed && launchMsOf(n.run) === launchMsOf(r.run),
    );
    if (!naive || !(naive.run.summary.presyncBytes > 0)) continue;
    out.push({ workload: w, source: r.series, percent: 100 * (1 - r.run.summary.presyncBytes / naive.run.summary.presyncBytes) });
  }
  const workloads = new Set(out.map((x) => x.workload));
  const withPaper: ReductionRow[] = [];
  for (const w of workloads) {
    if (w in PAPER_REPORTED) withPaper.push({ workload: w, source: PAPER_SOURCE_LABEL, percent: 100 * PAPER_REPORTED[w] });
    withPaper.push(...out.filter((x) => x.workload === w));
  }
  return withPaper;
}

export interface QemuBar {
  readonly workload: string;
  readonly policy: string;
  readonly metric: 'launch → running' | 'downtime';
  readonly ms: number;
  /** False when the run failed, including a guest that failed its check after a "done" migration. */
  readonly ok: boolean;
}

/** Launch-to-running and downtime of each run in qemu-bench files (stock QEMU beside presync). */
export function qemuBars(runs: readonly RunRef[]): QemuBar[] {
  const out: QemuBar[] = [];
  for (const r of runs) {
    if (r.kind !== 'qemu-bench') continue;
    const s = r.run.summary;
    const ok = runStatus(r.run).ok;
    if (s.launchToRunningMs !== null) out.push({ workload: r.run.workload, policy: r.run.policy, metric: 'launch → running', ms: s.launchToRunningMs, ok });
    if (s.downtimeMs !== null) out.push({ workload: r.run.workload, policy: r.run.policy, metric: 'downtime', ms: s.downtimeMs, ok });
  }
  return out;
}
