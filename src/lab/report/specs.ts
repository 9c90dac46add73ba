import type { TopLevelSpec } from 'vega-lite';
import { colorScale, FAIL_COLOR } from './palette.ts';
import { PAPER_SOURCE_LABEL, type Heatmap, type LaunchRow, type QemuBar, type ReductionRow, type ResidualRow, type TrafficRow, type WindowRow } from './data.ts';

/**
 * Vega-Lite specifications of the report's charts. Data is inlined (no
 * loader, no network); fonts are a generic family so any renderer (resvg, a
 * browser) finds one.
 */
export const FONT = 'sans-serif';

export const CONFIG = {
  font: FONT,
  background: 'white',
  view: { stroke: '#ddd' },
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#eee' },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 320 },
  header: { labelFontSize: 12, titleFontSize: 12 },
  title: { fontSize: 14, anchor: 'start' as const },
};

const PANEL_W = 280;
const PANEL_H = 170;

/** Colour by series, the legend listing only the series the chart draws. */
function colorOf(domain: readonly string[], rows: ReadonlyArray<{ readonly series: string }>, title = 'policy') {
  const drawn = new Set(rows.map((r) => r.series));
  return { field: 'series', type: 'nominal' as const, title, scale: colorScale(domain.filter((d) => drawn.has(d))) };
}

/** Largest value, 0 for none (no spread: series can be long). */
export function maxOf(values: readonly number[]): number {
  let m = 0;
  for (const v of values) if (v > m) m = v;
  return m;
}

/**
 * A log axis people can read: d3's default ticks on a symlog scale are
 * linear (0, 5 000, 10 000, 20 000) and crowd at the top. Ticks at 0 and each
 * decade from `from`, and a top at the maximum rounded up to one significant
 * digit, which is where the scale ends.
 */
export function logAxis(max: number, from = 1): { top: number; ticks: number[] } {
  const top = max > from ? Number(roundUp1(max).toPrecision(1)) : from * 10;
  const ticks = [0];
  for (let v = from; v < top * 0.99; v = Number((v * 10).toPrecision(1))) ticks.push(v);
  ticks.push(top);
  return { top, ticks };
}

function roundUp1(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  return Math.ceil(v / p - 1e-9) * p;
}

/** A symlog y channel over `values` with logAxis's ticks. */
function logY(field: string, title: string, values: readonly number[], from: number, constant: number) {
  const { top, ticks } = logAxis(maxOf(values), from);
  return {
    field,
    type: 'quantitative' as const,
    title,
    scale: { type: 'symlog' as const, constant, domain: [0, top] },
    axis: { values: ticks, format: ',~r' },
  };
}

/**
 * Real and simulated runs of one policy share its colour; when a chart has
 * both, the real shell's line is dashed. Returns the calculate transform and
 * the strokeDash channel, or nothing when there is one shell.
 */
function shellDash(rows: ReadonlyArray<{ readonly series: string }>) {
  if (!rows.some((r) => r.series.endsWith(' (real)'))) return { transform: [], encoding: {} };
  return {
    transform: [{ calculate: "indexof(datum.series, ' (real)') >= 0 ? 'real' : 'simulated'", as: 'shell' }],
    encoding: { strokeDash: { field: 'shell', type: 'nominal' as const, title: 'shell', scale: { domain: ['simulated', 'real'], range: [[1, 0], [5, 3]] } } },
  };
}

/** One panel per workload, three to a row. */
function facet(workloads: readonly string[]) {
  return { field: 'workload', type: 'nominal' as const, title: null, sort: [...workloads], header: { labelFontWeight: 'bold' as const } };
}

export function trafficSpec(rows: readonly TrafficRow[], workloads: readonly string[], domain: readonly string[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    config: CONFIG,
    title: { text: 'Traffic on the wire over time (Mbit/s, 0.5 s bins)', subtitle: 'log scale: the initial copy runs at link rate, keeping up with the guest costs a few Mbit/s' },
    data: { values: [...rows] },
    facet: facet(workloads),
    columns: 3,
    spec: {
      width: PANEL_W,
      height: PANEL_H,
      transform: shellDash(rows).transform,
      mark: { type: 'line', interpolate: 'step-after', strokeWidth: 1.4 },
      encoding: {
        x: { field: 'tS', type: 'quantitative', title: 'time (s)' },
        y: logY('mbitPerSec', 'Mbit/s (log)', rows.map((r) => r.mbitPerSec), 0.1, 0.1),
        color: colorOf(domain, rows),
        ...shellDash(rows).encoding,
      },
    },
  };
}

export function windowSpec(rows: readonly WindowRow[], workloads: readonly string[], domain: readonly string[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    config: CONFIG,
    title: 'Slow-start window over time (MiB per epoch)',
    data: { values: [...rows] },
    facet: facet(workloads),
    columns: 3,
    spec: {
      width: PANEL_W,
      height: PANEL_H,
      transform: shellDash(rows).transform,
      mark: { type: 'line', strokeWidth: 1.4 },
      encoding: {
        x: { field: 'tS', type: 'quantitative', title: 'time (s)' },
        y: { field: 'windowMiB', type: 'quantitative', title: 'window (MiB)' },
        color: colorOf(domain, rows),
        ...shellDash(rows).encoding,
      },
    },
  };
}

export function residualSpec(rows: readonly ResidualRow[], launches: readonly LaunchRow[], workloads: readonly string[], domain: readonly string[]): TopLevelSpec {
  // Both layers share one dataset inside the facet; `kind` tells them apart.
  const values = [...rows.map((r) => ({ ...r, kind: 'stale' })), ...launches.map((l) => ({ ...l, kind: 'launch' }))];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    config: CONFIG,
    title: { text: 'Residual: pages the target lacks; dashed rule = launch', subtitle: 'log scale (0, then decades)' },
    data: { values },
    facet: facet(workloads),
    columns: 3,
    spec: {
      width: PANEL_W,
      height: PANEL_H,
      layer: [
        {
          transform: [{ filter: "datum.kind === 'stale'" }, ...shellDash(rows).transform],
          mark: { type: 'line', strokeWidth: 1.4 },
          encoding: {
            x: { field: 'tS', type: 'quantitative', title: 'time (s)' },
            y: logY('stalePages', 'stale pages (log)', rows.map((r) => r.stalePages), 1, 1),
            color: colorOf(domain, rows),
            ...shellDash(rows).encoding,
          },
        },
        {
          transform: [{ filter: "datum.kind === 'launch'" }],
          mark: { type: 'rule', strokeDash: [4, 3], color: '#444', strokeWidth: 1 },
          encoding: { x: { field: 'tS', type: 'quantitative' } },
        },
      ],
    },
  };
}

export function heatmapSpec(h: Heatmap): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    config: CONFIG,
    title: { text: `Dirty pages: ${h.workload}`, subtitle: `pages written per ${h.regionPages}-page region per ${h.binMs / 1000} s` },
    width: 560,
    height: 220,
    data: { values: h.cells },
    mark: { type: 'rect' },
    encoding: {
      x: { field: 'tS', type: 'quantitative', title: 'time (s)' },
      x2: { field: 'tEndS' },
      y: { field: 'fromMiB', type: 'quantitative', title: 'guest memory offset (MiB)', scale: { zero: true } },
      y2: { field: 'toMiB' },
      color: { field: 'pages', type: 'quantitative', title: 'pages', scale: { type: 'sqrt', scheme: 'inferno', reverse: true, domainMin: 0 } },
      tooltip: [
        { field: 'tS', title: 'from (s)' },
        { field: 'fromMiB', title: 'region (MiB)' },
        { field: 'pages', title: 'pages' },
      ],
    },
  };
}

export function reductionSpec(rows: readonly ReductionRow[], policyDomain: readonly string[]): TopLevelSpec {
  const sources = [PAPER_SOURCE_LABEL, ...policyDomain.filter((p) => p !== PAPER_SOURCE_LABEL && rows.some((r) => r.source === p))];
  const workloads = [...new Set(rows.map((r) => r.workload))];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    config: CONFIG,
    title: { text: 'Transfer reduction vs presync-naive (%)', subtitle: "1 − presyncBytes ÷ naive's; grey: the paper's figure" },
    data: { values: [...rows] },
    width: { step: 20 },
    height: 220,
    mark: { type: 'bar' },
    encoding: {
      x: { field: 'workload', type: 'nominal', title: null, sort: workloads, axis: { labelAngle: 0 } },
      xOffset: { field: 'source', sort: sources },
      y: { field: 'percent', type: 'quantitative', title: 'reduction (%)' },
      color: {
        field: 'source',
        type: 'nominal',
        title: 'source',
        sort: sources,
        scale: colorScale(sources),
      },
      tooltip: [{ field: 'workload' }, { field: 'source' }, { field: 'percent', format: '.1f' }],
    },
  };
}

export function qemuSpec(bars: readonly QemuBar[], domain: readonly string[]): TopLevelSpec {
  const policies = [...domain.filter((p) => bars.some((b) => b.policy === p)), ...new Set(bars.map((b) => b.policy).filter((p) => !domain.includes(p)))];
  const workloads = [...new Set(bars.map((b) => b.workload))];
  const x = { field: 'workload', type: 'nominal' as const, title: null, sort: workloads, axis: { labelAngle: 0 } };
  const xOffset = { field: 'policy', sort: policies };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    config: CONFIG,
    title: {
      text: 'Real QEMU: stock migration vs presync (ms)',
      subtitle: 'bars and figures: median per workload; dots: each run; red ✗: a run whose guest failed its check after the migration',
    },
    data: { values: [...bars] },
    facet: { field: 'metric', type: 'nominal', title: null, sort: ['launch → running', 'downtime'], header: { labelFontWeight: 'bold', labelFontSize: 12 } },
    resolve: { scale: { y: 'independent' } },
    spec: {
      width: { step: 34 },
      height: 240,
      layer: [
        {
          mark: { type: 'bar' },
          encoding: {
            x,
            xOffset,
            y: { field: 'ms', type: 'quantitative', aggregate: 'median', title: 'ms' },
            color: { field: 'policy', type: 'nominal', title: 'policy', sort: policies, scale: colorScale(policies) },
          },
        },
        {
          // The median written above the bar and above its highest run, clear of the dots and crosses.
          transform: [{ aggregate: [{ op: 'median', field: 'ms', as: 'median' }, { op: 'max', field: 'ms', as: 'top' }], groupby: ['workload', 'policy', 'metric'] }],
          mark: { type: 'text', baseline: 'bottom', dy: -5, fontSize: 10, color: '#222', fontWeight: 'bold' },
          encoding: { x, xOffset, y: { field: 'top', type: 'quantitative' }, text: { field: 'median', type: 'quantitative', format: '.0f' } },
        },
        // Layers only for what there is: a layer filtered to nothing makes vega warn about its extent.
        ...(bars.some((b) => b.ok) ? [{
          transform: [{ filter: 'datum.ok' }],
          mark: { type: 'point', filled: true, size: 24, color: '#111', stroke: 'white', strokeWidth: 1 },
          encoding: { x, xOffset, y: { field: 'ms', type: 'quantitative' } },
        }] : []),
        ...(bars.some((b) => !b.ok) ? [{
          transform: [{ filter: '!datum.ok' }],
          mark: { type: 'text', text: '✗', fontSize: 15, fontWeight: 'bold', color: FAIL_COLOR, baseline: 'middle' },
          encoding: { x, xOffset, y: { field: 'ms', type: 'quantitative' } },
        }] : []),
      ],
    },
  } as TopLevelSpec;
}
