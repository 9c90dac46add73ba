import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

export type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Strict flag parsing: an unknown flag, a missing value or a stray argument is
 * a BAD_ARGUMENT error naming the flag and the command's usage.
 */
export function parseFlags<O extends Options>(argv: string[], options: O, usage: string, allowPositionals = false): ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: boolean }>> {
  try {
    return parseArgs({ args: rewriteDeprecated(argv, options), options, strict: true, allowPositionals });
  } catch (e) {
    const msg = e instanceof Error ? e.message.replace(/\. To specify a positional argument.*$/s, '') : String(e);
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `${msg}\nusage: ${usage}`);
  }
}

export function intFlag(value: string | undefined, name: string, def: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return def;
  const n = Number(value);
  if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${name} must be an integer in [${min}, ${max}], got "${value}"`);
  }
  return n;
}

/** `--workloads`: short (`text`) and long (`text-editing`) names both accepted, as the given mapping names them. */
export function workloadList(value: string | undefined, map: (name: string) => string): string | undefined {
  return value === undefined ? undefined : value.split(',').map((s) => map(s.trim())).join(',');
}

export function listFlag(value: string | undefined, name: string, allowed: readonly string[], def: readonly string[]): string[] {
  if (value === undefined) return [...def];
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${name} needs at least one value`);
  for (const it of items) {
    if (!allowed.includes(it)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${name}: unknown value "${it}"; expected one of: ${allowed.join(', ')}`);
    }
  }
  return items;
}

/** Old flag names that took bare milliseconds, and the duration flag that replaced each. */
const MS_FLAGS: Readonly<Record<string, string>> = {
  'launch-after-ms': 'launch-after',
  'launch-ms': 'launch-after',
  'rtt-ms': 'rtt',
};

/** Where deprecation notices go; tests may swap it. */
export const notices = { write: (text: string): void => void process.stderr.write(text) };

/**
 * One duration syntax everywhere (`3s`, `250ms`, `1m`): the old `--…-ms N`
 * spellings still work, rewritten to the new flag with a one-line notice on
 * stderr, when the command has the new flag and not the old one.
 */
export function rewriteDeprecated(argv: string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([a-z-]+-ms)(?:=(.*))?$/.exec(a);
    const to = m ? MS_FLAGS[m[1]] : undefined;
    if (!m || to === undefined || Object.hasOwn(options, m[1]) || !Object.hasOwn(options, to)) {
      out.push(a);
      continue;
    }
    const value = m[2] ?? argv[++i];
    if (value === undefined) {
      out.push(a);
      continue;
    }
    const converted = value
      .split(',')
      .map((v) => (/^\s*\d+(\.\d+)?\s*$/.test(v) ? `${v.trim()}ms` : v.trim()))
      .join(',');
    notices.write(`presync: --${m[1]} is deprecated; use --${to} ${converted}\n`);
    out.push(`--${to}`, converted);
  }
  return out;
}

/** A comma-separated list of durations (`20s,30s`), in ms. */
export function durationListFlag(value: string | undefined, name: string, def: readonly number[], parse: (v: string) => number): number[] {
  if (value === undefined) return [...def];
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${name} needs at least one duration`);
  return items.map((it) => {
    try {
      return parse(it);
    } catch (e) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${name}: ${(e as Error).message}`);
    }
  });
}
