import type { LoadedResults, RunRef } from './data.ts';

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
body { font-family: sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
figure { margin: 1.2rem 0 2rem; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9rem; max-width: 60rem; margin-top: .3rem; }
table { border-collapse: collapse; font-size: .82rem; margin: .5rem 0 1rem; }
th, td { padding: .2rem .55rem; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #666; font-size: .85rem; }
.bad { color: #b00; font-weight: bold; }
nav a { margin-right: .8rem; font-size: .9rem; }
`;

function fmt(v: unknown): { text: string; num: boolean } {
  if (v === null || v === undefined) return { text: '–', num: false };
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return { text: String(v), num: true };
    return { text: Number.isInteger(v) ? v.toLocaleString('en-US') : Math.abs(v) < 1 ? v.toFixed(3) : v.toFixed(1), num: true };
  }
  if (typeof v === 'boolean') return { text: v ? 'yes' : 'no', num: false };
  return { text: String(v), num: false };
}

export function htmlTable(headers: readonly string[], rows: ReadonlyArray<ReadonlyArray<unknown>>): string {
  const head = `<tr>${headers.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr>`;
  const body = rows
    .map((r) => `<tr>${r.map((c) => {
      const f = fmt(c);
      const bad = c === false || c === 'rolled-back' || c === 'in-doubt';
      return `<td class="${[f.num ? 'num' : '', bad ? 'bad' : ''].join(' ').trim()}">${escapeHtml(f.text)}</td>`;
    }).join('')}</tr>`)
    .join('\n');
  return `<table>\n<thead>${head}</thead>\n<tbody>\n${body}\n</tbody>\n</table>`;
}

function runsTable(runs: readonly RunRef[]): string {
  return htmlTable(
    ['run', 'shell', 'seed', 'outcome', 'launch→running ms', 'downtime ms', 'presync MiB', 'final MiB', 'residual pages', 'wasted pages', 'verified'],
    runs.map((r) => {
      const s = r.run.summary;
      return [
        r.run.label,
        r.run.shell,
        r.run.seed,
        s.outcome,
        s.launchToRunningMs,
        s.downtimeMs,
        s.presyncBytes / 2 ** 20,
        s.finalBytes / 2 ** 20,
        s.residualPagesAtLaunch,
        s.wastedPages,
        s.verified,
      ];
    }),
  );
}

function fileTables(files: readonly LoadedResults[]): string {
  const out: string[] = [];
  for (const f of files) {
    const rows = f.results.table ?? [];
    if (rows.length === 0) continue;
    const sections = [...new Set(rows.map((r) => (typeof r.section === 'string' ? r.section : '')))];
    for (const sec of sections) {
      const part = rows.filter((r) => (typeof r.section === 'string' ? r.section : '') === sec);
      const headers = [...new Set(part.flatMap((r) => Object.keys(r)))].filter((h) => h !== 'section');
      out.push(`<h3>${escapeHtml(sec || 'table')} <span class="meta">(${escapeHtml(f.source)})</span></h3>`);
      out.push(htmlTable(headers, part.map((r) => headers.map((h) => r[h] ?? null))));
    }
  }
  return out.join('\n');
}

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
