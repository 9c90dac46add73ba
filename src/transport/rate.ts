/**
 * Parsers for the rate and duration flags (`--bandwidth 1gbit`, `--timeout 30s`).
 *
 * Accepted rates (a positive number, optional space, a unit; result in bytes/s):
 * - plain number: bytes per second, e.g. `1250000`, `62.5`
 * - bits per second, decimal prefixes (x1000): `bit`, `kbit`, `mbit`, `gbit`, `tbit`,
 *   also spelled `b/s`, `kb/s`, `Mb/s`, `Gbit/s`, ... (lower-case `b` = bits)
 * - bits per second, binary prefixes (x1024): `kibit`, `mibit`, `gibit`, `tibit`
 * - bytes per second, decimal prefixes: `B/s`, `kB/s`, `MB/s`, `GB/s`, `TB/s`
 *   (upper-case `B` = bytes; the `/s` is required)
 * - bytes per second, binary prefixes: `KiB/s`, `MiB/s`, `GiB/s`, `TiB/s`
 * Prefix letters are case-insensitive; the b/B distinction is not.
 *
 * `mbps`-style units are rejected on purpose: tc(8) reads `mbps` as megabytes
 * per second while most people mean megabits, and a 8x misreading of a
 * bandwidth cap is worse than asking the user to write `mbit` or `MB/s`.
 *
 * Accepted durations: one or more `<number><unit>` parts with unit `ms`, `s`,
 * `m` or `h`, e.g. `500ms`, `30s`, `2m`, `1m30s`, `1.5s`. A bare number is
 * rejected because seconds and milliseconds are both plausible readings.
 */
import { ErrorCodes, PresyncError } from '../core/errors.ts';

const RATE_FORMS =
  'a bytes/s number (1250000), bits/s (500kbit, 100mbit, 1gbit, 10Mb/s, 1gibit) ' +
  'or bytes/s (50MB/s, 1.5GiB/s, 800kB/s)';

const DECIMAL: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };
const BINARY: Record<string, number> = { ki: 2 ** 10, mi: 2 ** 20, gi: 2 ** 30, ti: 2 ** 40 };

const NUMBER = String.raw`(\d+(?:\.\d+)?|\.\d+)`;
const RATE_RE = new RegExp(String.raw`^${NUMBER}\s*(.*)$`);
const RATE_UNIT_RE = /^([kmgt]i?)?(bits?|b|B)(\/s|ps)?$/i;

function badRate(text: string, why: string): PresyncError {
  return new PresyncError(
    ErrorCodes.BAD_ARGUMENT,
    `invalid rate ${JSON.stringify(text)}: ${why}; accepted forms: ${RATE_FORMS}`,
  );
}

function prefixFactor(prefix: string): number | undefined {
  const p = prefix.toLowerCase();
  return DECIMAL[p] ?? BINARY[p];
}

/** Parses a rate into bytes per second (may be fractional). */
export function parseRate(text: string): number {
  if (typeof text !== 'string') throw badRate(String(text), 'not a string');
  const t = text.trim();
  if (t === '') throw badRate(text, 'empty');
  const m = RATE_RE.exec(t);
  if (!m) throw badRate(text, 'not a number followed by a unit');
  const value = Number(m[1]);
  const unit = m[2]!;

  let bytesPerSec: number;
  if (unit === '') {
    bytesPerSec = value;
  } else {
    const u = RATE_UNIT_RE.exec(unit);
    if (!u) throw badRate(text, `unknown unit ${JSON.stringify(unit)}`);
    const prefix = u[1] ?? '';
    // The regex is case-insensitive for prefixes; bits vs bytes hinges on the case of b.
    const base = u[2]!.toLowerCase().startsWith('bit') ? 'bit' : u[2]!;
    const per = u[3]?.toLowerCase();
    const factor = prefixFactor(prefix)!;
    if (per === 'ps') {
      throw badRate(
        text,
        `"${unit}" is ambiguous (bits or bytes?); write ${m[1]}${prefix.toLowerCase()}bit or ${m[1]}${prefix.toUpperCase()}B/s`,
      );
    }
    if (base === 'B') {
      if (per !== '/s') throw badRate(text, `a byte rate needs "/s" (${m[1]}${prefix}B/s)`);
      bytesPerSec = value * factor;
    } else {
      // A bare `b` without /s reads as a size, not a rate.
      if (base === 'b' && per !== '/s') throw badRate(text, `write ${m[1]}${prefix}bit or ${m[1]}${prefix}b/s`);
      bytesPerSec = (value * factor) / 8;
    }
  }
  if (!Number.isFinite(bytesPerSec) || bytesPerSec <= 0) throw badRate(text, 'must be a positive, finite rate');
  return bytesPerSec;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION_PART = new RegExp(String.raw`${NUMBER}(ms|s|m|h)`, 'y');
const DURATION_FORMS = '<number><unit> parts with unit ms, s, m or h (500ms, 30s, 2m, 1m30s)';

function badDuration(text: string, why: string): PresyncError {
  return new PresyncError(
    ErrorCodes.BAD_ARGUMENT,
    `invalid duration ${JSON.stringify(text)}: ${why}; accepted forms: ${DURATION_FORMS}`,
  );
}

/** Parses a duration into milliseconds (may be fractional, never negative). */
export function parseDuration(text: string): number {
  if (typeof text !== 'string') throw badDuration(String(text), 'not a string');
  const t = text.trim();
  if (t === '') throw badDuration(text, 'empty');
  if (/^\d+(\.\d+)?$/.test(t)) throw badDuration(text, 'a unit is required');
  let ms = 0;
  DURATION_PART.lastIndex = 0;
  while (DURATION_PART.lastIndex < t.length) {
    const start = DURATION_PART.lastIndex;
    const m = DURATION_PART.exec(t);
    if (!m) throw badDuration(text, `cannot read ${JSON.stringify(t.slice(start))}`);
    ms += Number(m[1]) * DURATION_UNITS[m[2]!]!;
  }
  if (!Number.isFinite(ms)) throw badDuration(text, 'too large');
  return ms;
}

/** Formats bytes/s for humans, in bits as network people expect (`1 Gbit/s`). */
export function formatRate(bytesPerSec: number): string {
  const bits = bytesPerSec * 8;
  const units: Array<[number, string]> = [[1e12, 'Tbit/s'], [1e9, 'Gbit/s'], [1e6, 'Mbit/s'], [1e3, 'kbit/s']];
  for (const [f, u] of units) {
    if (bits >= f) return `${Number((bits / f).toPrecision(4))} ${u}`;
  }
  return `${Number(bits.toPrecision(4))} bit/s`;
}
