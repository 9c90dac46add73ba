/**
 * What an operator does to a running migration, through the built CLI:
 * scrape --metrics while it runs, `launch --when-ready`, `set --bandwidth`
 * (the send rate measurably changes) and `abort` (the guest keeps running on
 * the source, the target discards the image).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { processState } from '../../src/guest/controller.ts';
import { CLI } from '../../src/lab/cli-entry.ts';

const run = promisify(execFile);
const MiB = 2 ** 20;

interface Rig {
  dir: string;
  src: string;
  secret: string;
  sock: string;
  children: ChildProcess[];
}

function rig(imageMiB: number): Rig {
  const dir = mkdtempSync(join(tmpdir(), 'presync-op-'));
  const src = join(dir, 'source.img');
  writeFileSync(src, randomBytes(imageMiB * MiB));
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'operator-e2e-secret-0123456789\n');
  return { dir, src, secret, sock: join(dir, 'control.sock'), children: [] };
}

function cleanup(r: Rig): void {
  for (const c of r.children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  rmSync(r.dir, { recursive: true, force: true });
}

/** Every stdout line of a child as parsed JSON, and a way to wait for one. */
function jsonLines(child: ChildProcess): { lines: Array<Record<string, unknown>>; wait: (pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number) => Promise<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<{ pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (text) => {
    const l = JSON.parse(text) as Record<string, unknown>;
    lines.push(l);
    for (const w of [...waiters]) {
      if (w.pred(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  });
  return {
    lines,
    wait: (pred, timeoutMs = 60_000) => {
      const found = lines.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timed out; lines so far: ${JSON.stringify(lines.slice(-3))}`)), timeoutMs);
        waiters.push({ pred, resolve: (l) => (clearTimeout(t), resolve(l)) });
      });
    },
  };
}

function spawnCli(r: Rig, args: string[]): ChildProcess {
  // Locks in the rig's own directory: an agent this test SIGKILLs would otherwise leave its lock in the machine-wide one.
  const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, PRESYNC_LOCK_DIR: join(r.dir, 'locks') } });
  r.children.push(c);
  return c;
}

/** A stand-in guest process: something to pause, resume and check on. */
function guest(r: Rig): ChildProcess {
  const g = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  r.children.push(g);
  return g;
}

async function startServe(r: Rig, extra: string[] = []): Promise<{ port: number; child: ChildProcess; out: ReturnType<typeof jsonLines> }> {
  const child = spawnCli(r, ['serve', '--listen', '127.0.0.1:0', '--image', join(r.dir, 'target.img'), '--secret-file', r.secret, '--json', ...extra]);
  const out = jsonLines(child);
  const l = await out.wait((x) => x.event === 'listening');
  assert.equal(typeof l.ts, 'string', 'serve --json events carry a timestamp');
  return { port: Number(l.port), child, out };
}

async function control(r: Rig, args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run(process.execPath, [CLI, ...args, '--control', r.sock, '--json']);
  return JSON.parse(stdout) as Record<string, unknown>;
}

async function scrape(port: number): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  const m = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

function exited(c: ChildProcess): Promise<number | null> {
  return c.exitCode !== null ? Promise.resolve(c.exitCode) : new Promise((res) => c.once('exit', (code) => res(code)));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('--metrics during a real migration: processed bytes grow, remaining falls to ~0; launch --when-ready launches only after the initial copy; the outcome is counted', { timeout: 180_000 }, async () => {
  const r = rig(24);
  try {
    const target = await startServe(r, ['--metrics', '127.0.0.1:0']);
    const targetMetrics = Number((await target.out.wait((x) => x.event === 'metrics')).port);
    const g = guest(r);
    const migrate = spawnCli(r, [
      'migrate', '--image', r.src, '--to', `127.0.0.1:${target.port}`, '--secret-file', r.secret, '--pid', String(g.pid),
      '--control', r.sock, '--metrics', '127.0.0.1:0', '--bandwidth', '24mbit', '--downtime-limit', '50ms', '--metrics-linger', '3s', '--json',
    ]);
    const out = jsonLines(migrate);
    const port = Number((await out.wait((x) => x.event === 'metrics')).port);
    await out.wait((x) => x.event === 'phase' && x.phase === 'presync');
    // Asked before it is ready: it must wait for the initial copy.
    const asked = await control(r, ['launch', '--when-ready']);
    assert.equal(asked.launchWhenReady, true);
    const samples: Array<{ processed: number; remaining: number }> = [];
    const done = exited(migrate);
    let finished = false;
    let outcomeCounted = 0;
    void done.then(() => (finished = true));
    while (!finished) {
      try {
        const m = await scrape(port);
        const processed = m.get('presync_data_processed_bytes');
        const remaining = m.get('presync_data_remaining_bytes');
        if (processed !== undefined && remaining !== undefined && processed > 0) samples.push({ processed, remaining });
        const counted = m.get('presync_migrations_total{outcome="done"}') ?? 0;
        if (out.lines.some((l) => l.event === 'result')) outcomeCounted = Math.max(outcomeCounted, counted);
        else assert.equal(counted, 0, 'no outcome counted while it runs');
      } catch (e) {
        if (!finished && !(e instanceof TypeError)) throw e; // TypeError: the endpoint closed as the agent ended
      }
      await sleep(200);
    }
    assert.equal(await done, 0);
    const result = out.lines.at(-1)!;
    assert.equal(result.event, 'result');
    assert.equal(result.outcome, 'done', JSON.stringify(result));
    for (const l of out.lines) assert.match(String(l.ts), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, `every line has a timestamp: ${JSON.stringify(l)}`);

    assert.ok(samples.length >= 5, `scraped ${samples.length} times during the migration`);
    for (let i = 1; i < samples.length; i++) assert.ok(samples[i].processed >= samples[i - 1].processed, 'processed bytes never fall');
    assert.ok(samples.at(-1)!.processed > samples[0].processed, 'processed bytes grew');
    assert.ok(samples[0].remaining > 4 * MiB, `remaining at first ${samples[0].remaining}`);
    assert.ok(Math.min(...samples.map((s) => s.remaining)) < 0.05 * 24 * MiB, `remaining fell to ~0: ${JSON.stringify(samples.slice(-3))}`);

    // Launched by --when-ready, never before the initial copy was done.
    const launchedAt = out.lines.findIndex((l) => l.event === 'phase' && l.phase === 'launched');
    assert.ok(launchedAt > 0, 'it launched without an explicit launch');
    const before = out.lines.slice(0, launchedAt).filter((l) => l.event === 'progress');
    assert.ok(before.some((l) => l.initialCopyDone === true), 'the initial copy was done before the launch');

    assert.equal(outcomeCounted, 1, 'the source counted its outcome (scraped while --metrics-linger kept the endpoint up)');
    const tm = await scrape(targetMetrics);
    assert.equal(tm.get('presync_migrations_total{outcome="handed-over"}'), 1, 'the target counted the outcome');
  } finally {
    cleanup(r);
  }
});

test('set --bandwidth changes the send rate measurably; abort rolls back and the guest keeps running', { timeout: 180_000 }, async () => {
  // 128 MiB at 40 Mbit/s take ~27 s: the copy is still going when the rate is cut and when it is aborted.
  const r = rig(128);
  try {
    const target = await startServe(r);
    const g = guest(r);
    const migrate = spawnCli(r, ['migrate', '--image', r.src, '--to', `127.0.0.1:${target.port}`, '--secret-file', r.secret, '--pid', String(g.pid), '--control', r.sock, '--bandwidth', '40mbit', '--json']);
    const out = jsonLines(migrate);
    await out.wait((x) => x.event === 'progress' && Number(x.presyncBytes) > 0);
    const rateOver = async (ms: number): Promise<number> => {
      const a = await control(r, ['status']);
      await sleep(ms);
      const b = await control(r, ['status']);
      return ((Number(b.bytesSent) - Number(a.bytesSent)) * 1000) / (Number(b.elapsedMs) - Number(a.elapsedMs));
    };
    await sleep(500);
    const fast = await rateOver(3000);
    const set = await control(r, ['set', '--bandwidth', '2mbit']);
    assert.equal(set.bandwidthLimitBytesPerSec, 250_000);
    await sleep(700);
    // The status counts bytes when an epoch hands them to the link, and at 2 Mbit/s an epoch
    // sized at the old rate lasts seconds: measure over 9 s so at least one epoch ends inside.
    const slow = await rateOver(9000);
    assert.ok(slow > 0, 'still sending at the new rate');
    assert.ok(slow < fast * 0.5, `rate fell from ${fast} to ${slow} B/s`);

    const st = await control(r, ['status']);
    assert.ok(Number(st.bytesRemaining) > 0, 'still copying when aborted');
    await control(r, ['abort', '--reason', 'operator test']);
    const code = await exited(migrate);
    const result = out.lines.at(-1)!;
    assert.equal(result.event, 'result');
    assert.equal(result.outcome, 'rolled-back', JSON.stringify(result));
    assert.equal(code, 3, 'exit status 3: rolled back');
    // The guest runs on the source, not stopped; the target discarded the session.
    assert.notEqual(processState(g.pid!), 'T');
    assert.equal(g.exitCode, null);
    const end = await target.out.wait((x) => x.event === 'session-end');
    assert.notEqual(end.outcome, 'handed-over');
  } finally {
    cleanup(r);
  }
});
