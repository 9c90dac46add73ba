import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';

/**
 * Small measuring helpers for the perf bench: a warm-up then the median of
 * several runs (the machine is shared; a median resists a noisy neighbour
 * better than a mean), and the process's anonymous memory (RSS without the
 * shared-memory pages of a mapped guest image, which belong to the guest).
 */

export interface Timing {
  readonly medianMs: number;
  readonly minMs: number;
  readonly maxMs: number;
  readonly runs: number;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Runs `fn` `warmup` times unmeasured, then `runs` times; `prepare` runs before each, untimed. */
export async function timeIt(fn: () => unknown, o: { runs: number; warmup?: number; prepare?: () => unknown }): Promise<Timing> {
  for (let i = 0; i < (o.warmup ?? 1); i++) {
    await o.prepare?.();
    await fn();
  }
  const ms: number[] = [];
  for (let i = 0; i < o.runs; i++) {
    await o.prepare?.();
    const t = performance.now();
    await fn();
    ms.push(performance.now() - t);
  }
  return { medianMs: median(ms), minMs: Math.min(...ms), maxMs: Math.max(...ms), runs: o.runs };
}

/** Anonymous resident memory of this process, bytes (Linux /proc; falls back to rss elsewhere). */
export function anonRssBytes(): number {
  try {
    const m = /RssAnon:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return process.memoryUsage().rss;
}

/**
 * Writes an image of distinct non-zero pages (nothing for zero-page elision
 * or compression to skip): a 64-bit counter per 8 bytes, salted.
 */
export function writeDataImage(path: string, bytes: number, salt = 0x9e3779b9): void {
  const fd = openSync(path, 'w');
  try {
    const chunk = Buffer.alloc(4 << 20);
    const words = new BigUint64Array(chunk.buffer, chunk.byteOffset, chunk.length / 8);
    for (let off = 0; off < bytes; off += chunk.length) {
      const base = BigInt(off / 8) ^ BigInt(salt);
      for (let i = 0; i < words.length; i += 64) words[i] = base + BigInt(i) * 0x9e3779b97f4a7c15n;
      // The other words: a cheap per-chunk pattern, non-zero everywhere.
      if (off === 0) for (let i = 0; i < words.length; i++) if (i % 64) words[i] = BigInt(i) * 0x100000001b3n + 1n;
      writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - off));
    }
  } finally {
    closeSync(fd);
  }
}
