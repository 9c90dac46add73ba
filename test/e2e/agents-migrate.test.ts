import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

const ROOT = resolve(import.meta.dirname, '../..');
import { CLI } from '../../src/lab/cli-entry.ts';
import { scratchDir } from '../helpers/scratch.ts';
const WRITER = join(ROOT, 'test/fixtures/image-writer.mjs');

function waitForLine(child: ChildProcess, pred: (l: string) => boolean, timeoutMs = 20_000): Promise<string> {
  return new Promise((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    const t = setTimeout(() => rej(new Error('timed out waiting for output')), timeoutMs);
    rl.on('line', (l) => {
      if (pred(l)) {
        clearTimeout(t);
        rl.close();
        res(l);
      }
    });
  });
}

async function waitFor<T>(fn: () => T | undefined | Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

function reportLines(path: string): Array<Record<string, unknown>> {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('three processes: a writer, presync serve and presync migrate; the writer continues on the target', { timeout: 120_000 }, async () => {
  const dir = scratchDir('presync-e2e-');
  const src = join(dir, 'source.img');
  const dst = join(dir, 'target.img');
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'e2e-secret-0123456789abcdef\n');
  const srcReport = join(dir, 'source-report');
  const dstReport = join(dir, 'target-report');
  const children: ChildProcess[] = [];
  try {
    // 64 MiB image.
    const writer = spawn(process.execPath, [WRITER, '--image', src, '--pages', '16384', '--report', srcReport], { stdio: 'ignore' });
    children.push(writer);
    await waitFor(() => (reportLines(srcReport).length ? true : undefined));

    const onHandover = `cp "$PRESYNC_IMAGE" "${join(dir, 'at-handover.img')}" && exec "${process.execPath}" "${WRITER}" --image "$PRESYNC_IMAGE" --continue --report "${dstReport}"`;
    const serve = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--image', dst, '--secret-file', secret, '--on-handover', onHandover, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(serve);
    const listening = JSON.parse(await waitForLine(serve, (l) => l.includes('"listening"'))) as { port: number };

    const migrate = spawn(
      process.execPath,
      [CLI, 'migrate', '--image', src, '--to', `127.0.0.1:${listening.port}`, '--secret-file', secret, '--pid', String(writer.pid), '--launch-after', '3s', '--json'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(migrate);
    let out = '';
    migrate.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => migrate.once('exit', (c) => r(c)));
    const result = JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
    assert.equal(result.outcome, 'done', out);
    assert.equal(code, 0);
    assert.equal(result.verified, true);
    for (const k of ['launchToRunningMs', 'downtimeMs', 'presyncBytes', 'finalBytes', 'residualPagesAtLaunch', 'resentPages']) {
      assert.equal(typeof result[k], 'number', k);
    }

    // The source application was released (it must never run twice) and its image is frozen.
    await waitFor(() => (alive(writer.pid!) ? undefined : true), 5000);
    // The application continues on the target from where the source stopped
    // (its report line comes after the handover hook's copy has finished).
    const cont = await waitFor(() => reportLines(dstReport).find((l) => l.event === 'CONTINUE' || l.event === 'FAIL'));
    const sourceImage = readFileSync(src);
    const atHandover = readFileSync(join(dir, 'at-handover.img'));
    assert.ok(sourceImage.equals(atHandover), 'the target image at handover is byte-identical to the source');
    assert.equal(cont.event, 'CONTINUE', JSON.stringify(cont));
    const stopped = sourceImage.readBigUInt64LE(8);
    assert.equal(BigInt(cont.counter as string), stopped);
    children.push({ kill: () => process.kill(cont.pid as number) } as unknown as ChildProcess);
    await waitFor(() => (readFileSync(dst).readBigUInt64LE(8) > stopped ? true : undefined), 5000);
  } finally {
    for (const c of children) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
});

test('launch on command: presync status shows live figures, presync launch says go', { timeout: 120_000 }, async () => {
  const dir = scratchDir('presync-e2e-');
  const src = join(dir, 'source.img');
  writeFileSync(src, Buffer.alloc(1024 * 4096, 7));
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'e2e-secret-0123456789abcdef\n');
  const sock = join(dir, 'control.sock');
  const children: ChildProcess[] = [];
  try {
    const serve = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--image', join(dir, 'target.img'), '--secret-file', secret, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(serve);
    const listening = JSON.parse(await waitForLine(serve, (l) => l.includes('"listening"'))) as { port: number };
    const migrate = spawn(process.execPath, [CLI, 'migrate', '--image', src, '--to', `127.0.0.1:${listening.port}`, '--secret-file', secret, '--offline', '--control', sock, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(migrate);
    let out = '';
    migrate.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => migrate.once('exit', (c) => r(c)));
    await waitFor(() => (existsSync(sock) ? true : undefined));
    const cli = (args: string[]) =>
      new Promise<{ code: number | null; out: string }>((res) => {
        const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
        let o = '';
        c.stdout!.on('data', (d: Buffer) => (o += d.toString()));
        c.once('exit', (code) => res({ code, out: o }));
      });
    // Wait until presync has the whole (static) image in sync, as status reports it.
    const st = await waitFor(async () => {
      const s = await cli(['status', '--control', sock, '--json']);
      const j = JSON.parse(s.out) as { phase: string; inSyncPercent: number; launched: boolean };
      return j.inSyncPercent === 100 ? j : undefined;
    });
    assert.equal(st.phase, 'presync');
    assert.equal(st.launched, false);
    const l = await cli(['launch', '--control', sock]);
    assert.equal(l.code, 0);
    assert.equal(await exited, 0);
    const result = JSON.parse(out.trim().split('\n').pop()!) as { outcome: string; residualPagesAtLaunch: number };
    assert.equal(result.outcome, 'done');
    assert.equal(result.residualPagesAtLaunch, 0, 'a static image fully pre-synchronized leaves nothing for launch');
    assert.ok(readFileSync(src).equals(readFileSync(join(dir, 'target.img'))));
    const bad = await cli(['status', '--control', join(dir, 'nobody.sock')]);
    assert.equal(bad.code, 1);
  } finally {
    for (const c of children) c.kill('SIGKILL');
  }
});
