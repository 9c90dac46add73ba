/**
 * Shape checks for what QEMU sends back. QMP replies come from another
 * process (possibly a different QEMU version, possibly not QEMU at all), so
 * every field we rely on is checked here and a mismatch becomes a
 * PRESYNC_ERR_QMP instead of an undefined deep inside the engine.
 */
import { ErrorCodes, PresyncError } from '../core/errors.ts';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };

export function bad(what: string, detail: string): PresyncError {
  return new PresyncError(ErrorCodes.QMP, `unexpected QMP reply for ${what}: ${detail}`);
}

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function expectObject(v: unknown, what: string): JsonObject {
  if (!isObject(v)) throw bad(what, `expected an object, got ${describe(v)}`);
  return v;
}

export function expectArray(v: unknown, what: string): Json[] {
  if (!Array.isArray(v)) throw bad(what, `expected an array, got ${describe(v)}`);
  return v as Json[];
}

export function field<T>(o: JsonObject, key: string, what: string, check: (v: unknown) => v is T, type: string): T {
  const v = o[key];
  if (!check(v)) throw bad(what, `field "${key}" should be ${type}, got ${describe(v)}`);
  return v;
}

export function optField<T>(o: JsonObject, key: string, what: string, check: (v: unknown) => v is T, type: string): T | undefined {
  if (!(key in o)) return undefined;
  return field(o, key, what, check, type);
}

export const isString = (v: unknown): v is string => typeof v === 'string';
export const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
export const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
export const isNonNegInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
