/**
 * Reading the test guest's serial console (test-guest/README.md): heartbeats,
 * failures, and whether a migrated guest continued where the source stopped.
 * Shared by the e2e tests and the QEMU bench, so both judge a migration by
 * the same rule.
 */
import type { SerialLog } from './serial.ts';

/** Heartbeat counters printed since line `since`. */
export function heartbeats(serial: SerialLog, since = 0): number[] {
  return serial.matching(/^HB (\d+)$/, since).map((m) => Number(m.match[1]));
}

export function failures(serial: SerialLog): string[] {
  return serial.matching(/^FAIL\b/).map((m) => m.text);
}

/** The source's last heartbeat (after reading what QEMU wrote), or -1 if none. */
export async function lastHeartbeat(serial: SerialLog): Promise<number> {
  await serial.flush();
  const hb = heartbeats(serial);
  return hb.length === 0 ? -1 : Math.max(...hb);
}

export interface ContinuityVerdict {
  ok: boolean;
  /** Why not, in one line; empty when ok. */
  reason: string;
  /** First OK counter on the target, or null. */
  targetOk: number | null;
  /** First heartbeat on the target, or null. */
  targetFirstHb: number | null;
  lastSourceHb: number;
  /** When not ok: the target console's last lines (a reboot, a panic, a FAIL show there). */
  targetConsoleTail?: string[];
}

/**
 * The target continues the source's guest: it prints OK with a counter past
 * the source's last heartbeat, its heartbeats start at or after that value,
 * its verifier completes one more pass (a second OK), and neither console
 * shows FAIL. Never throws for a guest that misbehaves; it says why.
 */
const CONSOLE_TAIL_LINES = 40;

export async function checkContinuity(target: SerialLog, source: SerialLog, lastSourceHb: number, timeoutMs = 60_000): Promise<ContinuityVerdict> {
  const v: ContinuityVerdict = { ok: false, reason: '', targetOk: null, targetFirstHb: null, lastSourceHb };
  try {
    const ok = await target.waitForLine(/^OK (\d+)/, timeoutMs);
    v.targetOk = Number(ok.match[1]);
    const hb = heartbeats(target);
    v.targetFirstHb = hb.length > 0 ? hb[0] : null;
    if (!(v.targetOk > lastSourceHb)) v.reason = `target OK ${v.targetOk} does not continue past the source's last heartbeat ${lastSourceHb}`;
    else if (v.targetFirstHb === null || v.targetFirstHb < lastSourceHb) v.reason = `target heartbeats start at ${v.targetFirstHb}, source stopped at ${lastSourceHb}`;
    else await target.waitForLine(/^OK/, Math.min(timeoutMs, 30_000), ok.index + 1);
  } catch (e) {
    v.reason = `target guest: ${(e as Error).message}`;
  }
  await source.flush();
  const fails = [...failures(source).map((f) => `source: ${f}`), ...failures(target).map((f) => `target: ${f}`)];
  if (!v.reason && fails.length > 0) v.reason = fails[0];
  v.ok = v.reason === '';
  if (!v.ok) {
    await target.flush();
    v.targetConsoleTail = target.lines(target.nextIndex - CONSOLE_TAIL_LINES).map((l) => l.text);
  }
  return v;
}

/**
 * The real programs' check lines (test-guest/apps/README.md):
 * `APP <name> <progress> <check…>`; progress only grows while the program
 * runs, and a restarted program (a rebooted guest) starts it again from the
 * beginning.
 */
export function appChecks(serial: SerialLog, app: string, since = 0): Array<{ progress: number; check: string; index: number }> {
  return serial.matching(new RegExp(`^APP ${app} (\\d+)(.*)$`), since).map((m) => ({ progress: Number(m.match[1]), check: m.match[2].trim(), index: m.index }));
}

/** The source's last progress (after reading what QEMU wrote), or -1 if none. */
export async function lastAppProgress(serial: SerialLog, app: string): Promise<number> {
  await serial.flush();
  const c = appChecks(serial, app);
  return c.length === 0 ? -1 : Math.max(...c.map((x) => x.progress));
}

/**
 * A migrated real program went on correctly: on the target its first check
 * line continues past the source's last progress (the same process, not a
 * restart), a second one follows (it keeps running), and no check line on
 * either console says FAIL (the program's own verdict on its data: xz's and
 * sort's checksums, sqlite's integrity check).
 */
export async function checkAppContinuity(target: SerialLog, source: SerialLog, app: string, lastSourceProgress: number, timeoutMs = 120_000): Promise<ContinuityVerdict> {
  const v: ContinuityVerdict = { ok: false, reason: '', targetOk: null, targetFirstHb: null, lastSourceHb: lastSourceProgress };
  const line = new RegExp(`^APP ${app} (\\d+)`);
  try {
    const first = await target.waitForLine(line, timeoutMs);
    v.targetOk = Number(first.match[1]);
    v.targetFirstHb = v.targetOk;
    if (!(v.targetOk > lastSourceProgress)) v.reason = `target's ${app} is at ${v.targetOk}, not past the source's ${lastSourceProgress}: it did not go on`;
    else {
      const second = await target.waitForLine(line, timeoutMs, first.index + 1);
      if (!(Number(second.match[1]) > v.targetOk)) v.reason = `target's ${app} went back from ${v.targetOk} to ${second.match[1]}`;
    }
  } catch (e) {
    v.reason = `target guest: ${(e as Error).message}`;
  }
  await source.flush();
  await target.flush();
  const bad = [...appChecks(source, app).filter((c) => /FAIL/.test(c.check)).map((c) => `source: APP ${app} ${c.progress} ${c.check}`), ...appChecks(target, app).filter((c) => /FAIL/.test(c.check)).map((c) => `target: APP ${app} ${c.progress} ${c.check}`)];
  if (!v.reason && bad.length > 0) v.reason = bad[0];
  v.ok = v.reason === '';
  if (!v.ok) v.targetConsoleTail = target.lines(target.nextIndex - CONSOLE_TAIL_LINES).map((l) => l.text);
  return v;
}
