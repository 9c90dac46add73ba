import { columnOf, numberCell, plainCell, type Cell } from './columns.ts';
import type { LoadedResults, RunRef } from './data.ts';
import { guestCheckOf, isStock, runStatus } from './status.ts';

/**
 * The report page: plain HTML with the charts' SVG inlined and one inline
 * style sheet. No script and no external resource, so it opens offline,
 * attaches to a mail, and renders the same anywhere.
 */
export interface Chart {
  readonly id: string;
  readonly title: string;
  /** How to read it, one or two sentences. */
  readonly caption: string;
  readonly svg: string;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

const STYLE = `
body { font-family: sans-serif; margin: 2rem auto; max-width: 1150px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
figure { margin: 1.2rem 0 2rem; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9rem; max-width: 60rem; margin-top: .3rem; }
table { border-collapse: collapse; font-size: .82rem; margin: .5rem 0 1rem; }
th, td { padding: .2rem .45rem; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #666; font-size: .85rem; }
.bad { color: #b00000; font-weight: bold; }
tr.failed td { background: #fff0f0; }
th { white-space: normal; vertical-align: bottom; min-width: 3.5rem; max-width: 9rem; }
.scroll { overflow-x: auto; }
ul.failures { font-size: .85rem; }
nav a { margin-right: .8rem; font-size: .9rem; }
`;

/** A table of cells already formatted; bad cells are red, numbers right-aligned. */
export function htmlTable(headers: readonly string[], rows: ReadonlyArray<ReadonlyArray<Cell>>, o: { className?: string } = {}): string {
  const head = `<tr>${headers.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr>`;
  const body = rows
    .map((r) => {
      const failed = r.some((c) => c.bad);
      const cells = r.map((c) => {
        const cls = [c.num ? 'num' : '', c.bad ? 'bad' : ''].join(' ').trim();
        return `<td${cls ? ` class="${cls}"` : ''}>${escapeHtml(c.text)}</td>`;
      });
      return `<tr${failed ? ' class="failed"' : ''}>${cells.join('')}</tr>`;
    })
    .join('\n');
  return `<table${o.className ? ` class="${o.className}"` : ''}>\n<thead>${head}</thead>\n<tbody>\n${body}\n</tbody>\n</table>`;
}

const text = (t: string, bad = false): Cell => ({ text: t, num: false, bad });

/** Every run, failures in red: a rolled-back run, and a done one whose guest failed its check. */
function runsTable(runs: readonly RunRef[]): string {
  const headers = [
    'run',
    'shell',
    'seed',
    'outcome',
    'guest check',
    'launch → running (ms)',
    'pause (ms)',
    'presync sent (MiB)',
    'final copy (MiB)',
    'residual at launch (pages)',
    'wasted (pages)',
    'target verified',
  ];
  const rows = runs.map((r) => {
    const s = r.run.summary;
    const st = runStatus(r.run);
    const g = guestCheckOf(r.run);
    return [
      text(r.run.label),
      text(r.run.shell),
      plainCell(r.run.seed),
      text(st.text, !st.ok),
      g === null ? plainCell(null) : text(g.ok ? 'ok' : 'failed', !g.ok),
      numberCell(s.launchToRunningMs, 1, 1),
      numberCell(s.downtimeMs, 1, 1),
      numberCell(s.presyncBytes, 1 / 2 ** 20, 1),
      numberCell(s.finalBytes, 1 / 2 ** 20, 1),
      numberCell(s.residualPagesAtLaunch),
      numberCell(s.wastedPages),
      isStock(r.run) ? text('n/a (stock)') : text(s.verified ? 'yes' : 'no', !s.verified),
    ];
  });
  const failed = runs.filter((r) => !runStatus(r.run).ok);
  const note = failed.length > 0 ? `<p class="bad">${failed.length} of ${runs.length} run(s) failed (in red).</p>\n` : '';
  const why = failed
    .map((r) => {
      const st = runStatus(r.run);
      return `<li><b>${escapeHtml(r.run.label)}</b> <span class="bad">${escapeHtml(st.text)}</span>${st.detail ? `: ${escapeHtml(st.detail)}` : ''}</li>`;
    })
    .join('\n');
  return `${note}<div class="scroll">${htmlTable(headers, rows, { className: 'runs' })}</div>\n${why ? `<ul class="failures">\n${why}\n</ul>` : ''}`;
}

function fileTables(files: readonly LoadedResults[]): string {
  const out: string[] = [];
  for (const f of files) {
    const rows = f.results.table ?? [];
    if (rows.length === 0) continue;
    const sections = [...new Set(rows.map((r) => (typeof r.section === 'string' ? r.section : '')))];
    for (const sec of sections) {
      const part = rows.filter((r) => (typeof r.section === 'string' ? r.section : '') === sec);
      const keys = [...new Set(part.flatMap((r) => Object.keys(r)))].filter((h) => h !== 'section');
      const cols = keys.map(columnOf);
      out.push(`<h3>${escapeHtml(SECTION_TITLES[sec || f.results.kind] ?? (sec || 'table'))} <span class="meta">(${escapeHtml(f.source)})</span></h3>`);
      out.push(`<div class="scroll">${htmlTable(cols.map((c) => c.header), part.map((r) => keys.map((k, i) => cols[i].cell(r[k] ?? null))))}</div>`);
    }
  }
  return out.join('\n');
}

const SECTION_TITLES: Readonly<Record<string, string>> = {
  table: "The paper's table (medians over seeds × launch moments)",
  competing: 'Competing flow on the same link',
  frontier: "presync's residual slack: traffic vs residual",
  'qemu-bench': 'Real QEMU: medians per workload, stock QEMU beside presync',
};

export function reportHtml(o: { title: string; files: readonly LoadedResults[]; runs: readonly RunRef[]; charts: readonly Chart[]; generatedAt: string }): string {
  const inputs = o.files
    .map((f) => `<li><code>${escapeHtml(f.source)}</code>: ${escapeHtml(f.results.kind)}, ${f.results.runs.length} run(s), by <code>${escapeHtml(f.results.createdBy)}</code>${f.results.createdAt ? ` at ${escapeHtml(f.results.createdAt)}` : ''}</li>`)
    .join('\n');
  const nav = o.charts.map((c) => `<a href="#${escapeHtml(c.id)}">${escapeHtml(c.title)}</a>`).join('');
  const figures = o.charts
    .map((c) => `<figure id="${escapeHtml(c.id)}" class="chart">\n<h2>${escapeHtml(c.title)}</h2>\n${c.svg}\n<figcaption>${escapeHtml(c.caption)}</figcaption>\n</figure>`)
    .join('\n');
  const tables = fileTables(o.files);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(o.title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(o.title)}</h1>
<p class="meta">Generated ${escapeHtml(o.generatedAt)} by <code>presync report</code> from:</p>
<ul class="meta">
${inputs}
</ul>
<nav>${nav}</nav>
${figures}
<h2 id="runs">Runs</h2>
${runsTable(o.runs)}
${tables ? `<h2 id="tables">Tables</h2>\n${tables}` : ''}
</body>
</html>
`;
}
