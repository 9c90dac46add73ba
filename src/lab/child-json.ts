/**
 * A child process that reports in JSON lines on stdout (`presync … --json`):
 * collects the lines, waits for one matching a predicate, keeps the tail of
 * stderr for error messages. The one way the lab runs a presync agent.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { CLI } from './cli-entry.ts';

export type JsonRecord = Record<string, unknown>;

/** How long an agent may take to say it listens: a guard against a hang, not a budget (starts take seconds on a loaded machine). */
export const AGENT_START_GUARD_MS = 120_000;

export class JsonChild {
  readonly child: ChildProcess;
  readonly lines: JsonRecord[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #stderr = '';
  #closed = false;
  #waiters = new Set<() => void>();

  /** `presync <args>` (the built CLI) as a child; named after its subcommand in errors. */
  static cli(args: readonly string[], name = `presync ${args[0] ?? ''}`.trim()): JsonChild {
    return new JsonChild([process.execPath, CLI, ...args], name);
  }

  constructor(readonly argv: readonly string[], readonly name: string) {
    this.child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => {
      this.child.once('error', () => resolve({ code: null, signal: null }));
      // 'close', not 'exit': by then stdout is read to its end, so every line is in.
      this.child.once('close', (code, signal) => resolve({ code, signal }));
    });
    void this.exited.then(() => {
      this.#closed = true;
      this.#wake();
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      this.#stderr = (this.#stderr + d).slice(-16_384);
    });
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      try {
        const v: unknown = JSON.parse(l);
        if (typeof v === 'object' && v !== null && !Array.isArray(v)) this.lines.push(v as JsonRecord);
      } catch {
        return;
      }
      this.#wake();
    });
  }

  get stderrTail(): string {
    return this.#stderr.trim().split('\n').slice(-5).join(' | ');
  }

  get running(): boolean {
    return !this.#closed && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** All of stderr kept (its last 16 KiB). */
  get stderr(): string {
    return this.#stderr;
  }

  /** The first line matching `pred`; rejects on timeout or if the child exits first. */
  async next(pred: (l: JsonRecord) => boolean, timeoutMs: number, what: string): Promise<JsonRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit) return hit;
      if (this.#closed) throw new PresyncError(ErrorCodes.INTERNAL, `${this.name} exited (code ${this.child.exitCode}) before ${what}: ${this.stderrTail || 'no stderr'}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new PresyncError(ErrorCodes.TIMEOUT, `${this.name}: no ${what} within ${timeoutMs} ms: ${this.stderrTail || 'no stderr'}`);
      await new Promise<void>((r) => {
        const t = setTimeout(done, left);
        const self = this;
        function done() {
          clearTimeout(t);
          self.#waiters.delete(done);
          r();
        }
        this.#waiters.add(done);
      });
    }
  }

  /** The port of the agent's `listening` line (`presync serve --json`). */
  async listeningPort(timeoutMs: number, what = 'listening line'): Promise<number> {
    const l = await this.next((x) => x.event === 'listening' && typeof x.port === 'number', timeoutMs, what);
    return l.port as number;
  }

  /** Waits for the exit; kills with SIGKILL after `timeoutMs`. */
  async wait(timeoutMs: number): Promise<number | null> {
    const t = setTimeout(() => this.kill('SIGKILL'), timeoutMs);
    try {
      return (await this.exited).code;
    } finally {
      clearTimeout(t);
    }
  }

  /** SIGTERM, then the exit (SIGKILL if it takes over 5 s): nothing of the child outlives this. */
  async stop(): Promise<void> {
    this.kill('SIGTERM');
    await this.wait(5000);
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running) this.child.kill(signal);
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }
}
