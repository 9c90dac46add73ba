/**
 * The source agent's promises against operator mistakes and the unexpected,
 * through the real CLI with real processes (issue 15, source side): `--pid`
 * is required unless `--offline`, a guest that exits ends the migration,
 * SIGINT/SIGTERM roll back at any phase, the lock is by file identity (a
 * hard link is the same guest), `--control` only ever unlinks a socket, the
 * image changing size is a clear error (never a SIGBUS), refusals keep their
 * code and are not retried, and the exit status says what happened.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, linkSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processState } from '../../src/guest/controller.ts';
import { lockPath, readLock } from '../../src/engine/source-lock.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import type { TargetEvent } from '../../src/engine/target-session.ts';
import { FaultProxy } from '../../src/transport/fault-proxy.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { runCli, spawnCli, type CliChild } from '../../src/lab/faults-cli.ts';
import { startWriter, waitFor, type Writer } from '../../src/lab/faults-rig.ts';

const SECRET = 'source-reliability-secret-0123456789';

interface Dir {
  readonly dir: string;
  readonly secret: string;
  cleanup(): void;
}

function scratch(): Dir {
  const dir = mkdtempSync(join(tmpdir(), 'presync-src-rel-'));
  const secret = join(dir, 'secret');
  writeFileSync(secret, `${SECRET}\n`);
  return { dir, secret, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function sleeper(): ChildProcess {
  return spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
}

/** A TCP listener that only counts connections: proves nothing was sent. */
async function countingListener(): Promise<{ server: Server; port: number; connections: () => number }> {
  let n = 0;
  const server = createServer((s) => {
    n++;
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  return { server, port: typeof addr === 'object' && addr ? addr.port : 0, connections: () => n };
}

async function target(dir: string, o: { proxy?: boolean } = {}): Promise<{ agent: TargetAgent; proxy: FaultProxy | undefined; port: number; image: string; ends: TargetEvent[]; close(): Promise<void> }> {
  const image = join(dir, 'target.img');
  const ends: TargetEvent[] = [];
  const agent = await TargetAgent.start({
    transport: new TcpTransport(),
    listen: { host: '127.0.0.1', port: 0 },
    imagePath: image,
    secret: Buffer.from(SECRET),
    onEvent: (e) => {
      if (e.event === 'session-end') ends.push(e);
    },
  });
  const proxy = o.proxy ? await FaultProxy.start({ upstream: agent.address }) : undefined;
  return {
    agent,
    proxy,
    port: proxy ? proxy.address.port : agent.address.port,
    image,
    ends,
    close: async () => {
      await proxy?.close();
      await agent.close();
    },
  };
}

function lastResult(c: CliChild): Record<string, unknown> | undefined {
  return [...c.lines].reverse().find((l) => typeof l.outcome === 'string');
}

function targetState(image: string): string {
  try {
    return (JSON.parse(readFileSync(`${image}.presync`, 'utf8')) as { state: string }).state;
  } catch {
    return 'absent';
  }
}

function running(pid: number): boolean {
  const st = processState(pid);
  return st !== null && st !== 'T' && st !== 'Z';
}

test('migrate without --pid or --offline exits 2 before anything is sent; so does a --pid that is no process', { timeout: 60_000 }, async () => {
  const d = scratch();
  const l = await countingListener();
  try {
    const image = join(d.dir, 'app.img');
    writeFileSync(image, Buffer.alloc(64 * 4096, 1));
    const base = ['migrate', '--image', image, '--to', `127.0.0.1:${l.port}`, '--secret-file', d.secret, '--launch-after', '100ms'];
    const r = await runCli(base);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^presync migrate: PRESYNC_ERR_BAD_ARGUMENT: .*--pid.*--offline/);
    assert.equal(r.stderr.trim().split('\n').filter((x) => x.startsWith('presync')).length, 1, 'one clear line');
    const gone = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    await new Promise((res) => gone.once('exit', res));
    const r2 = await runCli([...base, '--pid', String(gone.pid)]);
    assert.equal(r2.code, 2, r2.stderr);
    assert.match(r2.stderr, /PRESYNC_ERR_BAD_ARGUMENT: .*no process/);
    const r3 = await runCli([...base, '--pid', '4242', '--offline']);
    assert.equal(r3.code, 2, r3.stderr);
    assert.match(r3.stderr, /PRESYNC_ERR_BAD_ARGUMENT: .*--offline/);
    assert.equal(l.connections(), 0, 'nothing was sent to the target');
    assert.equal(existsSync(lockPath(image)), false, 'no lock left');
  } finally {
    l.server.close();
    d.cleanup();
  }
});

test('a guest that exits during presync ends the migration with PRESYNC_ERR_GUEST_GONE; nothing is handed over', { timeout: 60_000 }, async () => {
  const d = scratch();
  const t = await target(d.dir);
  const guest = sleeper();
  try {
    const image = join(d.dir, 'app.img');
    writeFileSync(image, Buffer.alloc(256 * 4096, 7));
    const mig = spawnCli(['migrate', '--image', image, '--to', `127.0.0.1:${t.port}`, '--secret-file', d.secret, '--pid', String(guest.pid), '--epoch', '50ms', '--launch-after', '30s', '--json']);
    await mig.next((x) => x.event === 'connected');
    guest.kill('SIGKILL');
    const code = await mig.exited;
    const res = lastResult(mig);
    assert.equal(res?.outcome, 'rolled-back', JSON.stringify(res));
    assert.equal((res?.error as { code: string }).code, 'PRESYNC_ERR_GUEST_GONE');
    assert.equal(code, 1, 'the guest is gone: an error, not a rollback to a running guest');
    assert.equal(existsSync(lockPath(image)), false);
    await waitFor('the target session to end', () => t.ends.length > 0, 10_000);
    assert.notEqual(targetState(t.image), 'valid');
  } finally {
    guest.kill('SIGKILL');
    await t.close();
    d.cleanup();
  }
});

test('SIGINT while the guest is paused rolls back: result printed, guest resumed, target invalid, no lock or control socket left, exit 3; a second SIGINT is reported', { timeout: 90_000 }, async () => {
  const d = scratch();
  const t = await target(d.dir, { proxy: true });
  let w: Writer | undefined;
  try {
    w = await startWriter(d.dir, 'guest', 2048);
    const control = join(d.dir, 'control.sock');
    const mig = spawnCli(['migrate', '--image', w.image, '--to', `127.0.0.1:${t.port}`, '--secret-file', d.secret, '--pid', String(w.pid), '--policy', 'precopy', '--downtime-limit', '10s', '--epoch', '50ms', '--control', control, '--json']);
    await mig.next((x) => x.event === 'connected');
    await runCli(['launch', '--control', control]);
    await mig.next((x) => x.event === 'phase' && x.phase === 'launched');
    // The target's answers held back: the agent waits with the guest paused.
    t.proxy!.stall(undefined, 'down');
    const wpid = w.pid;
    await waitFor('the guest to be paused', () => processState(wpid) === 'T', 10_000);
    mig.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 30));
    try {
      mig.child.kill('SIGINT');
    } catch {
      /* already gone */
    }
    const code = await mig.exited;
    const res = lastResult(mig);
    assert.equal(res?.outcome, 'rolled-back', `${JSON.stringify(res)} ${mig.stderr()}`);
    assert.equal((res?.error as { code: string }).code, 'PRESYNC_ERR_ABORTED');
    assert.equal(code, 3, mig.stderr());
    assert.match(mig.stderr(), /SIGINT/);
    assert.ok(running(wpid), `the source guest runs again (state ${processState(wpid)})`);
    assert.equal(existsSync(lockPath(w.image)), false, 'no lock left');
    assert.equal(existsSync(control), false, 'no control socket left');
    t.proxy!.cutAll();
    await waitFor('the target session to end', () => t.ends.length > 0, 10_000);
    assert.notEqual(targetState(t.image), 'valid');
  } finally {
    w?.kill();
    await t.close();
    d.cleanup();
  }
});

test('SIGTERM during presync rolls back with a result and exit 3', { timeout: 60_000 }, async () => {
  const d = scratch();
  const t = await target(d.dir);
  const guest = sleeper();
  try {
    const image = join(d.dir, 'app.img');
    writeFileSync(image, Buffer.alloc(256 * 4096, 9));
    const mig = spawnCli(['migrate', '--image', image, '--to', `127.0.0.1:${t.port}`, '--secret-file', d.secret, '--pid', String(guest.pid), '--epoch', '50ms', '--launch-after', '30s', '--json']);
    await mig.next((x) => x.event === 'connected');
    mig.child.kill('SIGTERM');
    const code = await mig.exited;
    const res = lastResult(mig);
    assert.equal(res?.outcome, 'rolled-back', `${JSON.stringify(res)} ${mig.stderr()}`);
    assert.equal((res?.error as { code: string }).code, 'PRESYNC_ERR_ABORTED');
    assert.equal(code, 3);
    assert.ok(running(guest.pid!));
    assert.equal(existsSync(lockPath(image)), false);
    await waitFor('the target session to end', () => t.ends.length > 0, 10_000);
    assert.equal((t.ends.at(-1) as { outcome: string }).outcome, 'aborted', `the target was told: ${JSON.stringify(t.ends)} ${mig.stderr()} ${JSON.stringify(mig.lines.slice(-4))}`);
  } finally {
    guest.kill('SIGKILL');
    await t.close();
    d.cleanup();
  }
});

test('a hard link is the same guest: a second migration through it is refused with PRESYNC_ERR_LOCKED', { timeout: 60_000 }, async () => {
  const d = scratch();
  const t = await target(d.dir);
  const guest = sleeper();
  const image = join(d.dir, 'app.img');
  writeFileSync(image, Buffer.alloc(256 * 4096, 5));
  const alias = join(d.dir, 'other-name.img');
  linkSync(image, alias);
  const control = join(d.dir, 'control.sock');
  const first = spawnCli(['migrate', '--image', image, '--to', `127.0.0.1:${t.port}`, '--secret-file', d.secret, '--pid', String(guest.pid), '--control', control, '--json']);
  try {
    await first.next((x) => x.event === 'connected');
    const second = await runCli(['migrate', '--image', alias, '--to', `127.0.0.1:${t.port}`, '--secret-file', d.secret, '--pid', String(guest.pid), '--launch-after', '100ms']);
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, /PRESYNC_ERR_LOCKED: .*already being migrated/);
    assert.equal(readLock(alias)?.agentPid, first.child.pid, 'the lock found through the link is the first agent\'s');
    assert.match(String(readLock(image)?.lineageId ?? ''), /^[0-9a-f]{32}$/, 'the lock keeps the lineage id');
  } finally {
    first.child.kill('SIGTERM');
    await first.exited;
    guest.kill('SIGKILL');
    await t.close();
    d.cleanup();
  }
});

test('--control never deletes a regular file or follows a symlink at its path', { timeout: 60_000 }, async () => {
  const d = scratch();
  const guest = sleeper();
  try {
    const image = join(d.dir, 'app.img');
    writeFileSync(image, Buffer.alloc(64 * 4096, 1));
    const precious = join(d.dir, 'precious.txt');
    writeFileSync(precious, 'do not delete me\n');
    const base = ['migrate', '--image', image, '--to', '127.0.0.1:1', '--secret-file', d.secret, '--pid', String(guest.pid)];
    const r = await runCli([...base, '--control', precious]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^presync migrate: PRESYNC_ERR_BAD_ARGUMENT: .*not a socket/);
    assert.equal(readFileSync(precious, 'utf8'), 'do not delete me\n');
    const link = join(d.dir, 'link.sock');
    symlinkSync(precious, link);
    const r2 = await runCli([...base, '--control', link]);
    assert.equal(r2.code, 2, r2.stderr);
    assert.match(r2.stderr, /PRESYNC_ERR_BAD_ARGUMENT: .*symbolic link/);
    assert.ok(existsSync(link) && readFileSync(precious, 'utf8') === 'do not delete me\n');
    assert.equal(existsSync(lockPath(image)), false, 'no lock left');
  } finally {
    guest.kill('SIGKILL');
    d.cleanup();
  }
});

for (const change of ['shrink', 'grow'] as const) {
  test(`the source image ${change === 'shrink' ? 'truncated to half' : 'grown to double'} during presync: PRESYNC_ERR_IMAGE_SIZE, rolled back (never a SIGBUS), lock removed`, { timeout: 60_000 }, async () => {
    const d = scratch();
    const t = await target(d.dir);
    const guest = sleeper();
    try {
      const image = join(d.dir, 'app.img');
      const pages = 4096;
      writeFileSync(image, Buffer.alloc(pages * 4096, 3));
      const mig = spawnCli(['migrate', '--image', image, '--to', `127.0.0.1:${t.port}`, '--secret-file', d.secret, '--pid', String(guest.pid), '--epoch', '20ms', '--launch-after', '3s', '--json']);
      await mig.next((x) => x.event === 'connected');
      truncateSync(image, change === 'shrink' ? (pages / 2) * 4096 : pages * 2 * 4096);
      const code = await mig.exited;
      const res = lastResult(mig);
      assert.notEqual(code, null, `migrate died of a signal: ${mig.stderr()}`);
      assert.equal(res?.outcome, 'rolled-back', `${JSON.stringify(res)} ${mig.stderr()}`);
      assert.equal((res?.error as { code: string }).code, 'PRESYNC_ERR_IMAGE_SIZE');
      assert.equal(code, 3);
      assert.ok(running(guest.pid!));
      assert.equal(existsSync(lockPath(image)), false, 'no lock left');
      await waitFor('the target session to end', () => t.ends.length > 0, 10_000);
      assert.notEqual(targetState(t.image), 'valid');
    } finally {
      guest.kill('SIGKILL');
      await t.close();
      d.cleanup();
    }
  });
}

test('a target that refuses the image is not retried and keeps its code, even when launched at once; exit 3 (rolled back)', { timeout: 60_000 }, async () => {
  const d = scratch();
  const foreign = join(d.dir, 'target.img');
  writeFileSync(foreign, Buffer.alloc(64 * 4096, 8));
  const serve = spawnCli(['serve', '--listen', '127.0.0.1:0', '--image', foreign, '--secret-file', d.secret, '--json']);
  try {
    const port = Number((await serve.next((l) => l.event === 'listening')).port);
    const image = join(d.dir, 'app.img');
    writeFileSync(image, Buffer.alloc(64 * 4096, 1));
    const t0 = Date.now();
    const r = await runCli(['migrate', '--image', image, '--to', `127.0.0.1:${port}`, '--secret-file', d.secret, '--offline', '--launch-after', '0ms', '--json']);
    const res = [...r.lines].reverse().find((l) => typeof l.outcome === 'string');
    assert.equal(res?.outcome, 'rolled-back', `${JSON.stringify(res)} ${r.stderr}`);
    assert.equal((res?.error as { code: string }).code, 'PRESYNC_ERR_IMAGE_EXISTS');
    assert.equal(r.code, 3);
    assert.equal(r.lines.filter((l) => l.event === 'disconnected').length, 0, 'no retry');
    assert.ok(Date.now() - t0 < 20_000);
    assert.equal(readFileSync(foreign).equals(Buffer.alloc(64 * 4096, 8)), true, 'the foreign image is untouched');
  } finally {
    serve.child.kill('SIGTERM');
    await serve.exited;
    d.cleanup();
  }
});

test('bad usage exits 2, an unknown policy included', { timeout: 30_000 }, async () => {
  const d = scratch();
  try {
    const image = join(d.dir, 'app.img');
    writeFileSync(image, Buffer.alloc(64 * 4096, 1));
    const r = await runCli(['migrate', '--image', image, '--to', '127.0.0.1:1', '--secret-file', d.secret, '--offline', '--launch-after', '1s', '--policy', 'nope']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /PRESYNC_ERR_BAD_POLICY/);
    const q = await runCli(['qemu', 'migrate', '--qmp', join(d.dir, 'none.qmp'), '--to', '127.0.0.1:1', '--qemu-uri', 'tcp:127.0.0.1:2', '--secret-file', d.secret, '--launch-after', '1s', '--policy', 'nope']);
    assert.equal(q.code, 2, q.stderr);
    assert.match(q.stderr, /PRESYNC_ERR_BAD_POLICY/);
  } finally {
    d.cleanup();
  }
});
