import type { TopLevelSpec } from 'vega-lite';
import { PAPER_SOURCE_LABEL, type Heatmap, type LaunchRow, type QemuBar, type ReductionRow, type ResidualRow, type TrafficRow, type WindowRow } from './data.ts';

/**
 * Vega-Lite specifications of the report's charts. Data is inlined (no
 * loader, no network); fonts are a generic family so any renderer (resvg, a
 * browser) finds one.
 */
export const FONT = 'sans-serif';

const CONFIG = {
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

function colorOf(domain: readonly string[], title = 'policy') {
  return { field: 'series', type: 'nominal' as const, title, scale: { domain: [...domain], scheme: 'tableau10' } };
}

/** One panel per workload, three to a row. */
function facet(workloads: readonly string[]) {
  return { field: 'workload', type: 'nominal' as const, title: null, sort: [...workloads], header: { labelFontWeight: 'bold' as const } };
}

export function trafficSpec(rows: readonly TrafficRow[], workloads: readonly string[], domain: readonly string[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    config: CONFIG,
    title: 'Traffic on the wire over time (Mbit/s, 0.5 s bins)',
    data: { values: [...rows] },
    facet: facet(workloads),
    columns: 3,
    spec: {
      width: PANEL_W,
      height: PANEL_H,
      mark: { type: 'line', interpolate: 'step-after', strokeWidth: 1.4 },
      encoding: {
        x: { field: 'tS', type: 'quantitative', title: 'time (s)' },
        y: { field: 'mbitPerSec', type: 'quantitative', title: 'Mbit/s' },
        color: colorOf(domain),
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
      mark: { type: 'line', strokeWidth: 1.4 },
      encoding: {
        x: { field: 'tS', type: 'quantitative', title: 'time (s)' },
        y: { field: 'windowMiB', type: 'quantitative', title: 'window (MiB)' },
        color: colorOf(domain),
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
    title: 'Residual: pages the target lacks (symlog scale); dashed rule = launch',
    data: { values },
    facet: facet(workloads),
    columns: 3,
    spec: {
      width: PANEL_W,
      height: PANEL_H,
      layer: [
        {
          transform: [{ filter: "datum.kind === 'stale'" }],
          mark: { type: 'line', strokeWidth: 1.4 },
          encoding: {
            x: { field: 'tS', type: 'quantitative', title: 'time (s)' },
            y: { field: 'stalePages', type: 'quantitative', title: 'stale pages', scale: { type: 'symlog' } },
            color: colorOf(domain),
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
    width: { step: 14 },
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
        scale: { domain: sources, range: ['#9e9e9e', '#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1'] },
      },
      tooltip: [{ field: 'workload' }, { field: 'source' }, { field: 'percent', format: '.1f' }],
    },
  };
}

export function qemuSpec(bars: readonly QemuBar[]): TopLevelSpec {
  const policies = [...new Set(bars.map((b) => b.policy))];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    config: CONFIG,
    title: { text: 'Real QEMU: stock migration vs presync (median ms)', subtitle: 'launch → running and downtime per workload' },
    data: { values: [...bars] },
    facet: { field: 'metric', type: 'nominal', title: null, sort: ['launch → running', 'downtime'] },
    resolve: { scale: { y: 'independent' } },
    spec: {
      width: { step: 18 },
      height: 220,
      mark: { type: 'bar' },
      encoding: {
        x: { field: 'workload', type: 'nominal', title: null, axis: { labelAngle: 0 } },
        xOffset: { field: 'policy', sort: policies },
        y: { field: 'ms', type: 'quantitative', aggregate: 'median', title: 'ms' },
        color: { field: 'policy', type: 'nominal', sort: policies, scale: { scheme: 'tableau10' } },
      },
    },
  };
}
