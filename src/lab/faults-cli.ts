/** Running presync CLI agents as child processes for the fault cases (they must be killable with SIGKILL). */
import type { ChildProcess } from 'node:child_process';
import { JsonChild } from './child-json.ts';

/**
 * How long a wait for a CLI child's line or exit may take before it counts as
 * hung. Only a guard: every wait ends on the child's own event (its line, its
 * exit), and a CLI start can take several seconds on a loaded machine.
 */
export const CLI_HANG_GUARD_MS = 120_000;

export interface CliChild {
  readonly child: ChildProcess;
  readonly lines: Array<Record<string, unknown>>;
  stderr(): string;
  /** The first JSON line (seen so far or to come) that matches. */
  next(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
}

export function spawnCli(args: readonly string[]): CliChild {
  const c = JsonChild.cli(args);
  return {
    child: c.child,
    lines: c.lines,
    stderr: () => c.stderr,
    next: (pred, timeoutMs = CLI_HANG_GUARD_MS) => c.next(pred, timeoutMs, 'the expected line'),
    exited: c.exited.then((e) => e.code),
  };
}

export async function runCli(args: readonly string[], timeoutMs = CLI_HANG_GUARD_MS): Promise<{ code: number | null; lines: Array<Record<string, unknown>>; stderr: string }> {
  const c = spawnCli(args);
  const timer = setTimeout(() => c.child.kill('SIGKILL'), timeoutMs);
  const code = await c.exited;
  clearTimeout(timer);
  // Let the last stdout line be parsed.
  await new Promise((r) => setImmediate(r));
  return { code, lines: c.lines, stderr: c.stderr() };
}
