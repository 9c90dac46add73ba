/**
 * The report's colours, fixed by name so that a policy has the same colour
 * on every chart of every report (docs/report.md lists them). Red is kept
 * for failures and the pause; no policy gets it.
 */
export const POLICY_COLORS: Readonly<Record<string, string>> = {
  presync: '#1f77b4',
  'presync-fresh': '#9467bd',
  'presync-slowstart': '#2ca02c',
  'presync-predict': '#17becf',
  'presync-naive': '#ff7f0e',
  oracle: '#8c564b',
  precopy: '#e377c2',
  'qemu-stock': '#555555',
};

/** The paper's measured reductions (Tang et al., CIT 2012): grey bars beside the measured ones. */
export const PAPER_SOURCE_LABEL = 'paper (Tang et al. 2012)';
export const PAPER_COLOR = '#b0b0b0';

/** Policies the table does not know, in first-seen order. */
const SPARE_COLORS = ['#bcbd22', '#7b4173', '#637939', '#8c6d31', '#393b79', '#e7969c', '#6b6ecf', '#b5cf6b'];

/** Stock QEMU appears under several names in older files; all are the one baseline. */
const ALIASES: Readonly<Record<string, string>> = { stock: 'qemu-stock', qemu: 'qemu-stock', 'stock-qemu': 'qemu-stock' };

/** The policy a series stands for: "presync (real)" is presync run by the real shell. */
export function basePolicy(series: string): string {
  const p = series.replace(/ \(real\)$/, '');
  return ALIASES[p] ?? p;
}

/**
 * Colour per series for a domain of series names: known policies get their
 * fixed colour, unknown ones the spare colours in order. "presync (real)" has
 * presync's colour: one colour per policy, whichever shell ran it.
 */
export function seriesColors(domain: readonly string[]): string[] {
  let spare = 0;
  const spareOf = new Map<string, string>();
  return domain.map((s) => {
    if (s === PAPER_SOURCE_LABEL) return PAPER_COLOR;
    const base = basePolicy(s);
    let c = POLICY_COLORS[base] ?? spareOf.get(base);
    if (c === undefined) {
      c = SPARE_COLORS[spare++ % SPARE_COLORS.length];
      spareOf.set(base, c);
    }
    return c;
  });
}


/** A Vega-Lite colour scale that pins each series to its colour. */
export function colorScale(domain: readonly string[]): { domain: string[]; range: string[] } {
  return { domain: [...domain], range: seriesColors(domain) };
}

/**
 * Phases of a migration's timeline. Cool colours while the guest runs,
 * warm ones while it is paused, so the pause reads at a glance.
 */
export const PHASE_COLORS: Readonly<Record<string, string>> = {
  presync: '#c6dbef',
  // presync's switchover, in the order it happens
  'wait for the epoch': '#d9d9d9',
  'live rounds': '#6baed6',
  'QEMU stops the vCPUs': '#fdd0a2',
  'final scan & residual': '#fd8d3c',
  verify: '#74c476',
  'device state': '#9e9ac8',
  'target start': '#969696',
  // when a file has only the totals
  'pause: final copy → running': '#e6550d',
  // stock QEMU
  'pre-copy rounds': '#9ecae1',
  'stop & copy': '#e6550d',
  rollback: '#d62728',
};

export const PHASE_ORDER = Object.keys(PHASE_COLORS);

/** Failures and the pause outline. */
export const FAIL_COLOR = '#b00000';
