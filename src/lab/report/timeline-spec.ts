import type { TopLevelSpec } from 'vega-lite';
import { basePolicy, FAIL_COLOR, PHASE_COLORS, PHASE_ORDER, seriesColors } from './palette.ts';
import { CONFIG } from './specs.ts';
import type { Timeline } from './timeline.ts';

/**
 * The per-migration timeline: a Gantt chart with one row per run, grouped in
 * one block per policy. Presync lasts seconds and the switchover
 * milliseconds, so each row has two panels on their own axes: presync before
 * the launch (s), and the launch → running phases (ms) with the pause
 * outlined. Blocks have their own ms axis: stock QEMU's second of pre-copy
 * would squash presync's 50 ms phases to slivers. A third panel spells out
 * the figures and any failure.
 */
const ROW = 20;
const fmtMs = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

function resultText(t: Timeline): string {
  const figures = t.launchToRunningMs === null ? '' : `${fmtMs(t.launchToRunningMs)} ms${t.downtimeMs !== null ? `, pause ${fmtMs(t.downtimeMs)} ms` : ''}`;
  if (t.status.ok) return figures;
  return `✗ ${t.status.text}${figures ? ` · ${figures}` : ''}`;
}

function block(series: string, rows: readonly Timeline[], color: string, phases: readonly string[], presyncMaxS: number) {
  const labels = rows.map((r) => r.row);
  const y = { field: 'row', type: 'nominal' as const, sort: labels, scale: { domain: labels }, title: null };
  const failed = rows.filter((r) => !r.status.ok).map((r) => r.row);
  const height = { step: ROW };
  const presync = {
    width: 110,
    height,
    data: { values: rows.map((r) => ({ row: r.row, presyncS: r.presyncS, none: r.presyncS === null ? 'no presync' : '' })) },
    layer: [
      {
        mark: { type: 'bar' as const, height: { band: 0.62 }, color: PHASE_COLORS.presync },
        encoding: {
          y: { ...y, axis: { labelLimit: 230, labelExpr: `replace(datum.label, ${JSON.stringify(` · ${basePolicy(series)}`)}, '')`, labelColor: { condition: { test: `indexof(${JSON.stringify(failed)}, datum.value) >= 0`, value: FAIL_COLOR }, value: '#222' } } },
          x: { field: 'presyncS', type: 'quantitative' as const, title: 'presync before launch (s)', scale: { domain: [0, presyncMaxS], nice: true }, axis: { tickCount: 3 } },
        },
      },
      {
        mark: { type: 'text' as const, align: 'left' as const, dx: 4, color: '#777', fontSize: 10 },
        encoding: { y, x: { datum: 0, type: 'quantitative' as const }, text: { field: 'none' } },
      },
    ],
  };
  const maxMs = Math.max(1, ...rows.map((r) => Math.max(r.launchToRunningMs ?? 0, ...r.segments.map((s) => s.toMs))));
  const x = (field: string) => ({ field, type: 'quantitative' as const, title: 'ms after the launch', scale: { domain: [0, maxMs], nice: true } });
  const switchover = {
    width: 440,
    height,
    layer: [
      {
        data: { values: rows.flatMap((r) => r.segments.map((s) => ({ row: r.row, ...s }))) },
        mark: { type: 'bar' as const, height: { band: 0.62 } },
        encoding: {
          y: { ...y, axis: null },
          x: x('fromMs'),
          x2: { field: 'toMs' },
          color: { field: 'phase', type: 'nominal' as const, title: 'phase', scale: { domain: [...phases], range: phases.map((p) => PHASE_COLORS[p] ?? '#bbb') }, legend: { orient: 'bottom' as const, direction: 'horizontal' as const, columns: 4, symbolType: 'square' } },
        },
      },
      {
        data: { values: rows.filter((r) => r.pause !== null).map((r) => ({ row: r.row, fromMs: r.pause!.fromMs, toMs: r.pause!.toMs })) },
        mark: { type: 'bar' as const, height: { band: 0.95 }, fill: 'transparent', stroke: FAIL_COLOR, strokeWidth: 1.5 },
        encoding: { y: { ...y, axis: null }, x: x('fromMs'), x2: { field: 'toMs' } },
      },
    ],
  };
  const result = {
    width: 200,
    height,
    view: { stroke: null },
    data: { values: rows.map((r) => ({ row: r.row, text: resultText(r), ok: r.status.ok })) },
    mark: { type: 'text' as const, align: 'left' as const, fontSize: 11 },
    encoding: {
      y: { ...y, axis: null },
      x: { datum: 0, type: 'quantitative' as const, scale: { domain: [0, 1] }, axis: null },
      text: { field: 'text' },
      color: { condition: { test: '!datum.ok', value: FAIL_COLOR }, value: '#222' },
    },
  };
  return {
    title: { text: series, color, fontSize: 13, anchor: 'start' as const, frame: 'group' as const, offset: 4 },
    hconcat: [presync, switchover, result],
    spacing: 8,
  };
}

export function timelineSpec(timelines: readonly Timeline[], domain: readonly string[]): TopLevelSpec {
  const order = [...domain, ...timelines.map((t) => t.series).filter((s) => !domain.includes(s))];
  const blocks = [...new Set(order)].filter((s) => timelines.some((t) => t.series === s));
  const colors = seriesColors(blocks);
  const used = new Set(timelines.flatMap((t) => t.segments.map((s) => s.phase)));
  const phases = [...PHASE_ORDER.filter((p) => used.has(p)), ...[...used].filter((p) => !PHASE_ORDER.includes(p))];
  const presyncMaxS = Math.max(1, ...timelines.map((t) => t.presyncS ?? 0));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    config: { ...CONFIG, concat: { spacing: 16 } },
    title: { text: 'Migration timelines: launch → running, phase by phase', subtitle: 'red outline: the pause (guest stopped, as measured); one block per policy, each on its own ms axis' },
    vconcat: blocks.map((s, i) => block(s, timelines.filter((t) => t.series === s), colors[i], phases, presyncMaxS)),
    resolve: { scale: { color: 'shared' }, legend: { color: 'shared' } },
  } as TopLevelSpec;
}
