import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export type JsonLine = Record<string, unknown>;

/**
 * Collects a child's stdout JSON lines (others are skipped); next() resolves
 * with the first line, seen or still to come, that matches.
 */
export function jsonLines(child: ChildProcess, defaultTimeoutMs = 60_000): { lines: JsonLine[]; next: (pred: (l: JsonLine) => boolean, timeoutMs?: number) => Promise<JsonLine> } {
  const lines: JsonLine[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: child.stdout! }).on('line', (l) => {
    try {
      lines.push(JSON.parse(l) as JsonLine);
    } catch {
      return;
    }
    for (const w of [...waiters]) w();
  });
  const next = (pred: (l: JsonLine) => boolean, timeoutMs = defaultTimeoutMs) =>
    new Promise<JsonLine>((res, rej) => {
      const check = () => {
        const hit = lines.find(pred);
        if (!hit) return;
        clearTimeout(t);
        waiters.delete(check);
        res(hit);
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        rej(new Error(`timed out; lines so far: ${JSON.stringify(lines).slice(0, 2000)}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  return { lines, next };
}

/** The child's exit code, once it has exited (null if a signal ended it). */
export function exitOf(c: ChildProcess): Promise<number | null> {
  return new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(c.exitCode) : c.once('exit', (code) => r(code))));
}
