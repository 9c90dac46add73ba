/** Running presync CLI agents as child processes for the fault cases (they must be killable with SIGKILL). */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { CLI } from './faults-rig.ts';

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
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  createInterface({ input: child.stdout! }).on('line', (l) => {
    try {
      lines.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      return;
    }
    for (const w of [...waiters]) w();
  });
  const exited = new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  let gone = false;
  void exited.then(() => {
    gone = true;
    for (const w of [...waiters]) w();
  });
  const next = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = CLI_HANG_GUARD_MS) =>
    new Promise<Record<string, unknown>>((res, rej) => {
      const check = () => {
        const hit = lines.find(pred);
        if (hit) {
          clearTimeout(t);
          waiters.delete(check);
          res(hit);
        } else if (gone) {
          clearTimeout(t);
          waiters.delete(check);
          rej(new Error(`presync ${args[0]} exited before the expected line; stderr: ${err.slice(-500)}`));
        }
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        rej(new Error(`timed out waiting for presync ${args[0]}; stderr: ${err.slice(-500)}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  return { child, lines, stderr: () => err, next, exited };
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
