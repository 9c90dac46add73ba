/**
 * The blackout a client of the guest sees (docs/qemu.md, "bench qemu --vm
 * real"): one real TCP connection to the guest's echo service (guestd echo),
 * an 8-byte request every ~5 ms (a magic and a sequence number), every answer
 * checked to be the next one in order, and the longest gap between answers:
 * what a user of the VM notices of a migration, TCP's retransmissions and the
 * network's relearning included.
 *
 * Run as a process inside the client namespace (`ip netns exec NS node
 * dist/lab/blackout-client.js HOST PORT [INTERVAL_MS]`): it prints one JSON
 * line when connected and one report when it gets SIGTERM/SIGINT or its
 * stdin closes. `startBlackoutClient` does that from the lab.
 */
import { createConnection, type Socket } from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

const MAGIC = 0x70736263; // "psbc"
const REQUEST_BYTES = 8;

export interface Gap {
  /** Length of the gap, ms. */
  readonly gapMs: number;
  /** When the answer before the gap came (epoch ms). */
  readonly startMs: number;
  /** When the answer after it came, or the end of the observation (epoch ms). */
  readonly endMs: number;
}

/**
 * The longest gap between consecutive answer times (ms, ascending), and, when
 * `endMs` is given, between the last answer and the end of the observation (a
 * connection that stopped answering has an open gap up to then). Null with
 * fewer than two instants.
 */
export function longestGap(answerTimesMs: readonly number[], endMs?: number): Gap | null {
  const t = endMs === undefined ? answerTimesMs : [...answerTimesMs, endMs];
  let best: Gap | null = null;
  for (let i = 1; i < t.length; i++) {
    const g = t[i] - t[i - 1];
    if (g < 0) throw new PresyncError(ErrorCodes.INTERNAL, `answer times must ascend: ${t[i - 1]} then ${t[i]}`);
    if (best === null || g > best.gapMs) best = { gapMs: g, startMs: t[i - 1], endMs: t[i] };
  }
  return best;
}

/**
 * Every gap between consecutive answer times (and the tail to `endMs`) of at
 * least `minMs`, longest first, at most `max` of them.
 */
export function gapsOver(answerTimesMs: readonly number[], minMs: number, endMs?: number, max = 200): Gap[] {
  const t = endMs === undefined ? answerTimesMs : [...answerTimesMs, endMs];
  const out: Gap[] = [];
  for (let i = 1; i < t.length; i++) {
    const g = t[i] - t[i - 1];
    if (g >= minMs) out.push({ gapMs: g, startMs: t[i - 1], endMs: t[i] });
  }
  return out.sort((a, b) => b.gapMs - a.gapMs).slice(0, max);
}

/**
 * The longest of `gaps` that overlaps the interval [fromMs, toMs] (the
 * migration's pause: source STOP to target RESUME): the blackout the client
 * saw because of the move, as opposed to a stall at another time. Null if no
 * gap overlaps it.
 */
export function gapAcross(gaps: readonly Gap[], fromMs: number, toMs: number): Gap | null {
  let best: Gap | null = null;
  for (const g of gaps) {
    if (g.startMs <= toMs && g.endMs >= fromMs && (best === null || g.gapMs > best.gapMs)) best = g;
  }
  return best;
}

/** Gaps shorter than this are not listed in a report (`gaps`): a healthy connection answers every interval. */
export const LISTED_GAP_MIN_MS = 20;

export interface BlackoutReport {
  readonly sent: number;
  readonly answered: number;
  /** The longest gap between answers (to the stop, if it stopped answering), ms; null without two answers. */
  readonly longestGapMs: number | null;
  readonly longestGapStartMs: number | null;
  readonly longestGapEndMs: number | null;
  /** Every gap of at least LISTED_GAP_MIN_MS (longest first, at most 200): to find the one across the pause. */
  readonly gaps: Gap[];
  /** No reset or close, every answer correct and in order, and still answering when stopped. */
  readonly connectionSurvived: boolean;
  /** What broke the connection or the order, if anything. */
  readonly error: string | null;
  readonly connectedAtMs: number | null;
  readonly stoppedAtMs: number;
  readonly intervalMs: number;
}

/** A connection whose last answer is older than this when it stops is not answering any more. */
export const STALE_TAIL_MS = 1000;

/** The report for answer times `times` (epoch ms) at `stoppedAtMs` (pure: unit-tested). */
export function blackoutReport(o: { sent: number; times: readonly number[]; error: string | null; connectedAtMs: number | null; stoppedAtMs: number; intervalMs: number }): BlackoutReport {
  // The tail counts: a connection that stopped answering has a gap that never ended.
  const gap = longestGap(o.times, o.stoppedAtMs);
  const last = o.times.length > 0 ? o.times[o.times.length - 1] : null;
  const stillAnswering = last !== null && o.stoppedAtMs - last <= STALE_TAIL_MS;
  return {
    sent: o.sent,
    answered: o.times.length,
    longestGapMs: gap === null ? null : Math.round(gap.gapMs * 10) / 10,
    longestGapStartMs: gap?.startMs ?? null,
    longestGapEndMs: gap?.endMs ?? null,
    gaps: gapsOver(o.times, LISTED_GAP_MIN_MS, o.stoppedAtMs),
    connectionSurvived: o.error === null && o.times.length >= 2 && stillAnswering,
    error: o.error ?? (o.times.length > 0 && !stillAnswering ? `no answer in the last ${Math.round(o.stoppedAtMs - last!)} ms` : null),
    connectedAtMs: o.connectedAtMs,
    stoppedAtMs: o.stoppedAtMs,
    intervalMs: o.intervalMs,
  };
}

const nowMs = (): number => performance.timeOrigin + performance.now();

/** The client itself (in the client namespace): runs until stop() and returns its report. */
export class EchoProber {
  #sock: Socket;
  #sent = 0;
  #times: number[] = [];
  #error: string | null = null;
  #connectedAt: number | null = null;
  #pending: Buffer = Buffer.alloc(0);
  #timer: NodeJS.Timeout | undefined;
  readonly connected: Promise<void>;

  constructor(host: string, port: number, readonly intervalMs = 5) {
    this.#sock = createConnection({ host, port, noDelay: true });
    this.connected = new Promise((resolve, reject) => {
      this.#sock.once('connect', () => {
        this.#connectedAt = nowMs();
        this.#timer = setInterval(() => this.#send(), intervalMs);
        resolve();
      });
      this.#sock.once('error', reject);
    });
    this.connected.catch(() => undefined);
    this.#sock.on('data', (d: Buffer) => this.#receive(d));
    this.#sock.on('error', (e) => this.#fail(`connection error: ${e.message}`));
    this.#sock.on('close', () => this.#fail('connection closed by the guest'));
  }

  #fail(why: string): void {
    if (this.#error === null) this.#error = why;
    clearInterval(this.#timer);
  }

  #send(): void {
    if (this.#error !== null) return;
    const b = Buffer.alloc(REQUEST_BYTES);
    b.writeUInt32BE(MAGIC, 0);
    b.writeUInt32BE(this.#sent >>> 0, 4);
    this.#sent++;
    this.#sock.write(b);
  }

  #receive(d: Buffer): void {
    const at = nowMs();
    this.#pending = this.#pending.length ? Buffer.concat([this.#pending, d]) : d;
    while (this.#pending.length >= REQUEST_BYTES) {
      const want = this.#times.length >>> 0;
      const magic = this.#pending.readUInt32BE(0);
      const seq = this.#pending.readUInt32BE(4);
      this.#pending = this.#pending.subarray(REQUEST_BYTES);
      if (magic !== MAGIC || seq !== want) {
        this.#fail(`answer ${this.#times.length} is wrong: magic ${magic.toString(16)} seq ${seq}, expected seq ${want}`);
        this.#sock.destroy();
        return;
      }
      this.#times.push(at);
    }
  }

  /** Current counts (for progress lines). */
  get answered(): number {
    return this.#times.length;
  }

  stop(): BlackoutReport {
    const stoppedAtMs = nowMs();
    clearInterval(this.#timer);
    const report = blackoutReport({ sent: this.#sent, times: this.#times, error: this.#error, connectedAtMs: this.#connectedAt, stoppedAtMs, intervalMs: this.intervalMs });
    this.#sock.removeAllListeners('close');
    this.#sock.destroy();
    return report;
  }
}

/** The built script (dist/lab/blackout-client.js) next to the built CLI, for spawning in a namespace. */
export function blackoutClientScript(cliPath: string): string {
  return join(dirname(cliPath), '..', 'lab', 'blackout-client.js');
}

/** A running client process (in a namespace) that reports when stopped. */
export class BlackoutClient {
  #child: ChildProcess;
  #out = '';
  #err = '';
  readonly #exited: Promise<void>;

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.#out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.#err = (this.#err + d).slice(-4096)));
    this.#exited = new Promise((r) => child.once('close', () => r()));
  }

  /** Starts the client (`prefix` runs it in a namespace) and waits until it is connected and answered. */
  static async start(o: { prefix: string[]; script: string; host: string; port: number; intervalMs?: number; timeoutMs?: number }): Promise<BlackoutClient> {
    const argv = [...o.prefix, process.execPath, o.script, o.host, String(o.port), String(o.intervalMs ?? 5)];
    const c = new BlackoutClient(spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] }));
    const deadline = Date.now() + (o.timeoutMs ?? 30_000);
    while (!/"event":"answering"/.test(c.#out)) {
      if (c.#child.exitCode !== null || c.#child.signalCode !== null || Date.now() > deadline) {
        c.kill();
        throw new PresyncError(ErrorCodes.TIMEOUT, `blackout client: no answers from ${o.host}:${o.port}: ${c.#err.trim() || c.#out.trim() || 'no output'}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return c;
  }

  /** Stops the client and returns its report. */
  async stop(timeoutMs = 10_000): Promise<BlackoutReport> {
    this.#child.stdin!.end();
    const t = setTimeout(() => this.kill(), timeoutMs);
    await this.#exited;
    clearTimeout(t);
    const line = this.#out.split('\n').find((l) => l.includes('"event":"report"'));
    if (!line) throw new PresyncError(ErrorCodes.INTERNAL, `blackout client ended without a report: ${this.#err.trim() || 'no stderr'}`);
    const { event: _e, ...report } = JSON.parse(line) as BlackoutReport & { event: string };
    return report;
  }

  kill(): void {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGKILL');
  }
}

async function main(argv: string[]): Promise<void> {
  const [host, port, interval] = argv;
  const p = new EchoProber(host, Number(port), Number(interval ?? 5));
  try {
    await p.connected;
  } catch (e) {
    process.stderr.write(`cannot connect to ${host}:${port}: ${(e as Error).message}\n`);
    process.exit(1);
  }
  const waitAnswers = setInterval(() => {
    if (p.answered >= 3) {
      clearInterval(waitAnswers);
      process.stdout.write(`${JSON.stringify({ event: 'answering', answered: p.answered })}\n`);
    }
  }, 5);
  const finish = () => {
    clearInterval(waitAnswers);
    process.stdout.write(`${JSON.stringify({ event: 'report', ...p.stop() })}\n`, () => process.exit(0));
  };
  process.stdin.on('end', finish).resume();
  process.once('SIGTERM', finish);
  process.once('SIGINT', finish);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) void main(process.argv.slice(2));
