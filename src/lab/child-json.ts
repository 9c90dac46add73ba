/**
 * A child process that reports in JSON lines on stdout (`presync … --json`):
 * collects the lines, waits for one matching a predicate, keeps the tail of
 * stderr for error messages.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

export type JsonRecord = Record<string, unknown>;

export class JsonChild {
  readonly child: ChildProcess;
  readonly lines: JsonRecord[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #stderr = '';
  #waiters = new Set<() => void>();

  constructor(readonly argv: readonly string[], readonly name: string) {
    this.child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => {
      this.child.once('error', () => resolve({ code: null, signal: null }));
      this.child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    void this.exited.then(() => this.#wake());
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
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The first line matching `pred`; rejects on timeout or if the child exits first. */
  async next(pred: (l: JsonRecord) => boolean, timeoutMs: number, what: string): Promise<JsonRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit) return hit;
      if (!this.running) throw new PresyncError(ErrorCodes.INTERNAL, `${this.name} exited (code ${this.child.exitCode}) before ${what}: ${this.stderrTail || 'no stderr'}`);
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

  /** Waits for the exit; kills with SIGKILL after `timeoutMs`. */
  async wait(timeoutMs: number): Promise<number | null> {
    const t = setTimeout(() => this.kill('SIGKILL'), timeoutMs);
    try {
      return (await this.exited).code;
    } finally {
      clearTimeout(t);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running) this.child.kill(signal);
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }
}
