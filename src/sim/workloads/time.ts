import { Rng } from '../../core/rng.ts';

/**
 * Deterministic event timing for workload generators.
 *
 * A workload must give the same pages for [a, c) as for [a, b) ∪ [b, c), so no
 * generator keeps state between calls. Random events live in fixed time slots
 * whose Rng is seeded by (seed, stream, slot index); periodic events are a
 * closed-form function of their index. Every event time is computed by one
 * expression, wherever the interval boundaries fall, so an event is in exactly
 * one of two adjacent intervals.
 */

function mix(h: number, v: number): number {
  h ^= v >>> 0;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** 32-bit hash of (seed, stream, index); seed and index may exceed 32 bits. */
export function hashSeed(seed: number, stream: number, index: number): number {
  let h = 0x2545f491;
  h = mix(h, seed >>> 0);
  h = mix(h, Math.floor(seed / 4294967296) >>> 0);
  h = mix(h, stream >>> 0);
  h = mix(h, index >>> 0);
  h = mix(h, Math.floor(index / 4294967296) >>> 0);
  return h;
}

/** Uniform in [0, 1) from (seed, stream, index), without building an Rng. */
export function hashUnit(seed: number, stream: number, index: number): number {
  return hashSeed(seed, stream, index) / 4294967296;
}

/**
 * Calls fn for every k ≥ 0 with tMs = phaseMs + k·periodMs in [fromMs, toMs).
 */
export function forEachTick(periodMs: number, phaseMs: number, fromMs: number, toMs: number, fn: (k: number, tMs: number) => void): void {
  if (!(periodMs > 0) || !(toMs > fromMs)) return;
  let k = Math.max(0, Math.floor((fromMs - phaseMs) / periodMs) - 1);
  while (phaseMs + k * periodMs < fromMs) k++;
  for (;; k++) {
    const t = phaseMs + k * periodMs;
    if (t >= toMs) break;
    fn(k, t);
  }
}

/** A Poisson process whose events are pinned to seeded slots. */
export interface PoissonProcess {
  readonly seed: number;
  /** Distinguishes independent processes of one workload. */
  readonly stream: number;
  readonly ratePerSec: number;
  /** Slot length, ms; events per slot ≈ rate·slot, so pick it to keep that in the tens. */
  readonly slotMs: number;
}

/** A slot length that keeps about 20 events per slot, between 1 ms and 1 s. */
export function slotFor(ratePerSec: number): number {
  if (!(ratePerSec > 0)) return 1000;
  const ms = (20 / ratePerSec) * 1000;
  if (ms >= 1000) return 1000;
  if (ms >= 100) return 100;
  if (ms >= 10) return 10;
  return 1;
}

/**
 * Calls fn(tMs, key) for every event of the process in [fromMs, toMs). The key
 * is a random 32-bit value private to the event (derive more with keyUnit /
 * keyInt), so what fn draws does not depend on which other events fall inside
 * the interval.
 */
export function forEachPoissonEvent(p: PoissonProcess, fromMs: number, toMs: number, fn: (tMs: number, key: number) => void): void {
  if (!(p.ratePerSec > 0) || !(toMs > fromMs)) return;
  const lambda = (p.ratePerSec * p.slotMs) / 1000;
  // One slot back: rounding can put an event of slot k at exactly (k+1)·slot.
  for (let k = Math.max(0, Math.floor(fromMs / p.slotMs) - 1); k * p.slotMs < toMs; k++) {
    const start = k * p.slotMs;
    const rng = new Rng(hashSeed(p.seed, p.stream, k));
    const n = rng.poisson(lambda);
    for (let i = 0; i < n; i++) {
      const t = start + rng.next() * p.slotMs;
      const key = rng.nextU32();
      if (t >= fromMs && t < toMs) fn(t, key);
    }
  }
}

/** The i-th uniform [0, 1) value derived from an event key. */
export function keyUnit(key: number, i: number): number {
  return mix(mix(0x6a09e667, key), i) / 4294967296;
}

/** The i-th uniform integer in [0, n) derived from an event key. */
export function keyInt(key: number, i: number, n: number): number {
  return Math.floor(keyUnit(key, i) * n);
}

/**
 * For n items written one after another over [t0, t0 + durMs) (item i at
 * t0 + i·durMs/n), the index range [i0, i1) of the items written in
 * [fromMs, toMs).
 */
export function spreadRange(t0: number, durMs: number, n: number, fromMs: number, toMs: number): [number, number] {
  if (n <= 0 || !(toMs > fromMs)) return [0, 0];
  if (!(durMs > 0)) return t0 >= fromMs && t0 < toMs ? [0, n] : [0, 0];
  const at = (i: number): number => t0 + (i * durMs) / n;
  const clamp = (i: number, lo: number): number => Math.min(n, Math.max(lo, i));
  let i0 = clamp(Math.floor(((fromMs - t0) * n) / durMs) - 1, 0);
  while (i0 < n && at(i0) < fromMs) i0++;
  let i1 = clamp(Math.floor(((toMs - t0) * n) / durMs) - 1, i0);
  while (i1 < n && at(i1) < toMs) i1++;
  return [i0, i1];
}
