/**
 * The pieces every RAM-file fault case shares: a writer process whose whole
 * state lives in its image (test/fixtures/image-writer.mjs), a handover hook
 * that restarts it over the received image, the writer's own consistency
 * rule applied to an image, and the verdicts "exactly one writer runs, and
 * its memory checks out" after a migration that finished or rolled back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { processState } from '../guest/controller.ts';
import type { HandoverHook } from '../engine/target-session.ts';
import { commandHook } from '../engine/handover-command.ts';
import { sleep } from '../transport/deadline.ts';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const WRITER = join(ROOT, 'test/fixtures/image-writer.mjs');
export { CLI } from './cli-entry.ts';
export const PAGE = 4096;
const MAGIC = 0x52575350;
const FILL = 0x5a;


export async function waitFor<T>(what: string, fn: () => T | undefined | null | false, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return processState(pid) !== 'Z';
  } catch {
    return false;
  }
}

export function reportLines(path: string): Array<Record<string, unknown>> {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

export interface Writer {
  readonly pid: number;
  readonly image: string;
  readonly child: ChildProcess;
  kill(): void;
}

/** Starts the writer on a fresh image and waits until it has stamped every page once. */
export async function startWriter(dir: string, name: string, pages: number): Promise<Writer> {
  const image = join(dir, `${name}.img`);
  const report = join(dir, `${name}.report`);
  const child = spawn(process.execPath, [WRITER, '--image', image, '--pages', String(pages), '--report', report], { stdio: 'ignore' });
  const pid = child.pid!;
  await waitFor('the writer to start', () => reportLines(report).length > 0);
  // Its cold sweep visits every page within 2 × pages writes; before that, fill pages carry no stamp.
  await waitFor('the writer to stamp every page', () => counterOf(image) > BigInt(pages * 2 + 64));
  return { pid, image, child, kill: () => killQuietly(pid) };
}

export function killQuietly(pid: number, sig: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

export function counterOf(image: string): bigint {
  try {
    const b = readFileSync(image).subarray(0, 16);
    return b.length === 16 && b.readUInt32LE(0) === MAGIC ? b.readBigUInt64LE(8) : 0n;
  } catch {
    return 0n;
  }
}

/**
 * The writer's consistency rule, stricter than its own `--continue` check:
 * page 0 holds the magic and the counter; every other page is either
 * untouched (all zero, or all 0x5a for odd pages, its resident data) or
 * starts with a 16-byte stamp (counter ≤ bound, its own index, zero) followed
 * by exactly that untouched body. Any flipped byte anywhere breaks one of these.
 */
export function checkWriterImage(buf: Buffer, counterBound?: bigint, o: { allowZeroPages?: boolean } = {}): { counter: bigint; badPages: number[] } {
  const pages = Math.floor(buf.length / PAGE);
  if (pages === 0 || buf.readUInt32LE(0) !== MAGIC) return { counter: 0n, badPages: [0] };
  const counter = buf.readBigUInt64LE(8);
  const bound = counterBound ?? counter;
  const bad: number[] = [];
  for (let p = 1; p < pages; p++) {
    const at = p * PAGE;
    const fill = p % 2 === 1 ? FILL : 0;
    const c = buf.readBigUInt64LE(at);
    const idx = buf.readUInt32LE(at + 8);
    const untouchedHead = buf.subarray(at, at + 16).every((x) => x === fill);
    // The stamp is 16 bytes: counter u64, index u32, four zero bytes.
    const stamped = c !== 0n && idx === p && c <= bound && buf.readUInt32LE(at + 12) === 0;
    const body = buf.subarray(at + 16, at + PAGE).every((x) => x === fill);
    // A target image may hold pages not received yet: all zero.
    if (o.allowZeroPages && buf.subarray(at, at + PAGE).every((x) => x === 0)) continue;
    if (!(body && (untouchedHead || stamped))) bad.push(p);
  }
  return { counter, badPages: bad };
}

export function differingPages(a: Buffer, b: Buffer): number {
  if (a.length !== b.length) return Math.ceil(Math.max(a.length, b.length) / PAGE);
  let n = 0;
  for (let at = 0; at < a.length; at += PAGE) if (!a.subarray(at, at + PAGE).equals(b.subarray(at, at + PAGE))) n++;
  return n;
}

/** What the target does at handover: keep a copy of the image as received, then run the writer on it (`--continue`). */
export interface TargetRestart {
  readonly command: string;
  readonly hook: HandoverHook;
  /** Times the in-process hook was called (a handover starts the guest exactly once). */
  readonly starts: { count: number };
  readonly atHandover: string;
  readonly report: string;
}

export function targetRestart(dir: string, name = 'target'): TargetRestart {
  const atHandover = join(dir, `${name}.at-handover.img`);
  const report = join(dir, `${name}.report`);
  const command = `cp "$PRESYNC_IMAGE" "${atHandover}" && exec "${process.execPath}" "${WRITER}" --image "$PRESYNC_IMAGE" --continue --report "${report}"`;
  // Its stderr file goes in the case directory, removed with it.
  const inner = commandHook(command, { logDir: dir });
  const starts = { count: 0 };
  const hook: HandoverHook = {
    start: (ctx) => {
      starts.count++;
      return inner.start(ctx);
    },
  };
  return { command, hook, starts, atHandover, report };
}

export interface Verdict {
  guestRunning: boolean;
  memoryVerified: boolean;
  lostPages: number;
  notes: string[];
}

/** After `done`: the source writer is gone, the target writer resumed at the source's last counter and goes on; nothing differs. */
export async function judgeDone(w: Writer, t: TargetRestart, targetImage: string): Promise<Verdict> {
  const notes: string[] = [];
  let cont: Record<string, unknown> | undefined;
  try {
    cont = await waitFor('the target writer to report', () => reportLines(t.report).find((l) => l.event === 'CONTINUE' || l.event === 'FAIL'), 15_000);
  } catch {
    notes.push('the writer never started on the target');
  }
  const sourceGone = await waitFor('the source writer to end', () => !alive(w.pid), 5000).catch(() => false);
  if (!sourceGone) notes.push(`the source writer ${w.pid} still runs (state ${processState(w.pid)})`);
  const src = readFileSync(w.image);
  const at = existsSync(t.atHandover) ? readFileSync(t.atHandover) : Buffer.alloc(0);
  const lostPages = differingPages(src, at);
  if (lostPages > 0) notes.push(`${lostPages} pages of the image at handover differ from the source's last state`);
  const srcCheck = checkWriterImage(src);
  if (srcCheck.badPages.length > 0) notes.push(`${srcCheck.badPages.length} pages of the source's last state fail the writer's rule (first ${srcCheck.badPages.slice(0, 5).join(',')})`);
  let memoryVerified = lostPages === 0 && srcCheck.badPages.length === 0;
  let targetRuns = false;
  const started = reportLines(t.report).filter((l) => l.event === 'CONTINUE' || l.event === 'FAIL');
  if (started.length > 1 || t.starts.count > 1) notes.push(`${started.length} writers reported on the target (hook called ${t.starts.count} times)`);
  if (cont) {
    const pid = Number(cont.pid);
    if (cont.event !== 'CONTINUE') {
      notes.push(`the target writer failed its check: ${JSON.stringify(cont)}`);
      // What changed in the target image between the handover copy and the writer's check?
      const now = existsSync(targetImage) ? readFileSync(targetImage) : Buffer.alloc(0);
      const changed: number[] = [];
      for (let q = 0; q * PAGE < Math.min(now.length, at.length); q++) if (!now.subarray(q * PAGE, (q + 1) * PAGE).equals(at.subarray(q * PAGE, (q + 1) * PAGE))) changed.push(q);
      const tc = checkWriterImage(now, srcCheck.counter);
      notes.push(`target image vs the copy at handover: ${changed.length} pages differ (first ${changed.slice(0, 8).join(',')}); rule fails on ${tc.badPages.length} (first ${tc.badPages.slice(0, 8).join(',')})`);
    }
    if (BigInt(String(cont.counter ?? -1)) !== srcCheck.counter) notes.push(`target resumed at ${String(cont.counter)}, source stopped at ${srcCheck.counter}`);
    memoryVerified &&= cont.event === 'CONTINUE' && BigInt(String(cont.counter ?? -1)) === srcCheck.counter;
    // It must make progress past where the source stopped.
    targetRuns = alive(pid) && (await waitFor('the target writer to progress', () => counterOf(targetImage) > srcCheck.counter, 5000).catch(() => false)) === true;
    if (!targetRuns) notes.push('the target writer does not run on past the source');
    for (const l of started) killQuietly(Number(l.pid));
  }
  return { guestRunning: sourceGone && targetRuns && started.length === 1, memoryVerified, lostPages, notes };
}

/** After `rolled-back`: the source writer runs (not stopped) and makes progress, its image checks out, and nothing started on the target. */
export async function judgeRolledBack(w: Writer, t: TargetRestart | undefined): Promise<Verdict> {
  const notes: string[] = [];
  const st = processState(w.pid);
  const running = st !== null && st !== 'T' && st !== 'Z';
  if (!running) notes.push(`the source writer is ${st === null ? 'gone' : `in state ${st}`}`);
  const before = counterOf(w.image);
  const progressed = running && (await waitFor('the source writer to progress', () => counterOf(w.image) > before, 5000).catch(() => false));
  if (running && !progressed) notes.push('the source writer makes no progress');
  // Freeze it for an instant to read a consistent image, then let it go on.
  let bad = -1;
  if (running) {
    killQuietly(w.pid, 'SIGSTOP');
    await waitFor('the writer to stop', () => processState(w.pid) === 'T', 2000).catch(() => undefined);
    bad = checkWriterImage(readFileSync(w.image)).badPages.length;
    killQuietly(w.pid, 'SIGCONT');
    if (bad > 0) notes.push(`${bad} pages of the source image fail the writer's check`);
  }
  const targetStarted = t !== undefined && reportLines(t.report).length > 0;
  if (targetStarted) {
    notes.push('a writer was started on the target');
    for (const l of reportLines(t.report)) if (typeof l.pid === 'number') killQuietly(l.pid);
  }
  return { guestRunning: running && progressed === true && !targetStarted, memoryVerified: bad === 0, lostPages: Math.max(0, bad), notes };
}
