import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

export type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Strict flag parsing: an unknown flag, a missing value or a stray argument is
 * a BAD_ARGUMENT error naming the flag and the command's usage.
 */
export function parseFlags<O extends Options>(argv: string[], options: O, usage: string, allowPositionals = false): ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: boolean }>> {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals });
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
