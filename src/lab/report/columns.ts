/**
 * Human headers and units for the columns of results tables (the paper's
 * table, competing flow, frontier, the QEMU bench's medians). A results file
 * keeps exact numbers under camelCase keys; the page shows what a reader
 * wants: "launch → running, median (ms)", MiB instead of bytes, percent
 * instead of fractions, "failed" in red instead of `false`.
 */
export interface Cell {
  readonly text: string;
  readonly num: boolean;
  readonly bad: boolean;
}

export interface Column {
  readonly header: string;
  readonly cell: (v: unknown) => Cell;
}

const MIB = 2 ** 20;
const EMPTY: Cell = { text: '–', num: false, bad: false };

/** Numbers: integers grouped, others to a precision that fits their size. */
export function formatNumber(v: number, decimals?: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (decimals !== undefined) return v.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  const a = Math.abs(v);
  return v.toLocaleString('en-US', { maximumFractionDigits: a >= 100 ? 0 : a >= 1 ? 1 : 3, minimumFractionDigits: a >= 100 ? 0 : a >= 1 ? 1 : 0 });
}

export function numberCell(v: unknown, scale = 1, decimals?: number): Cell {
  if (typeof v !== 'number') return plainCell(v);
  return { text: formatNumber(v * scale, decimals), num: true, bad: false };
}

export function plainCell(v: unknown): Cell {
  if (v === null || v === undefined) return EMPTY;
  if (typeof v === 'boolean') return { text: v ? 'yes' : 'no', num: false, bad: !v };
  if (typeof v === 'number') return numberCell(v);
  return { text: String(v), num: false, bad: v === 'rolled-back' || v === 'in-doubt' };
}

export function guestCell(v: unknown): Cell {
  if (typeof v !== 'boolean') return plainCell(v);
  return v ? { text: 'ok', num: false, bad: false } : { text: 'failed', num: false, bad: true };
}

const col = (header: string, cell: (v: unknown) => Cell = plainCell): Column => ({ header, cell });
const ms = (header: string): Column => col(`${header} (ms)`, (v) => numberCell(v, 1, 1));
const mib = (header: string): Column => col(`${header} (MiB)`, (v) => numberCell(v, 1 / MIB, 1));
const pct = (header: string): Column => col(`${header} (%)`, (v) => numberCell(v, 100, 1));
const pages = (header: string): Column => col(`${header} (pages)`, (v) => numberCell(v));

const KNOWN: Readonly<Record<string, Column>> = {
  workload: col('workload'),
  policy: col('policy'),
  runs: col('runs'),
  verified: col('verified'),
  reduction: pct('reduction vs naive'),
  steadyReduction: pct('steady-state reduction'),
  paperReduction: pct("paper's reduction"),
  oracleRatio: col("bytes ÷ oracle's", (v) => numberCell(v, 1, 2)),
  residualP50: pages('residual at launch, median'),
  residualP95: pages('residual at launch, p95'),
  residualRatioP95: col("residual p95 ÷ naive's", (v) => numberCell(v, 1, 2)),
  residualSlack: col('residual slack', (v) => numberCell(v, 1, 2)),
  residualPages: pages('residual at launch'),
  launchToRunningMs: ms('launch → running'),
  wastedPages: pages('wasted'),
  competingLoss: pct("competing flow's loss"),
  presyncBytes: mib('sent during presync'),
  presyncLaunchToRunningMsMedian: ms('presync launch → running, median'),
  stockLaunchToRunningMsMedian: ms('stock QEMU launch → running, median'),
  ratio: col('stock ÷ presync', (v) => numberCell(v, 1, 1)),
  presyncDowntimeMsMedian: ms('presync pause, median'),
  stockDowntimeMsMedian: ms('stock QEMU pause, median'),
  presyncBytesMedian: mib('presync sent, median'),
  stockBytesMedian: mib('stock QEMU sent, median'),
  guestOk: col('presync guest check', guestCell),
  stockGuestOk: col('stock QEMU guest check', guestCell),
};

/** "presyncDowntimeMsMedian" → "presync downtime ms median": the fallback for keys not listed. */
function words(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase();
}

/** The column for a table key: a known one, else one guessed from the key's unit suffix. */
export function columnOf(key: string): Column {
  const known = KNOWN[key];
  if (known) return known;
  const m = /^(.*?)(Ms|Bytes|Pages|Percent)(Median|P\d+)?$/.exec(key);
  if (m) {
    const stat = m[3] ? `, ${m[3] === 'Median' ? 'median' : m[3].toLowerCase()}` : '';
    const name = `${words(m[1])}${stat}`;
    if (m[2] === 'Ms') return ms(name);
    if (m[2] === 'Bytes') return mib(name);
    if (m[2] === 'Pages') return pages(name);
    return col(`${name} (%)`, (v) => numberCell(v, 1, 1));
  }
  if (/guestok$/i.test(key)) return col(words(key.replace(/Ok$/, ' check')), guestCell);
  return col(words(key));
}
