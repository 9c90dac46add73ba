/**
 * The source lock through the CLI: a guest left paused by a dead source agent
 * is resumed by `presync migrate --recover` (or by the next migrate), a lock
 * left in doubt is never resumed blindly, a live lock refuses. Two concurrent
 * `presync migrate` of one guest are the `second-migration-refused` case of
 * the fault matrix (test/e2e/faults-matrix.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { processState } from '../../src/guest/controller.ts';
import { lockPath, processStartTime, readLock, type LockRecord } from '../../src/engine/source-lock.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { FaultProxy } from '../../src/transport/fault-proxy.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { runCli, spawnCli } from '../../src/lab/faults-cli.ts';
import { scratchDir } from '../helpers/scratch.ts';

/** A hang guard, not a budget: each step waits for a CLI run's exit, which takes seconds on a loaded machine. */
const TEST_GUARD_MS = 300_000;

const SECRET = 'lock-test-secret-0123456789abcdef';

function sleeper(): ChildProcess {
  return spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
}

async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A pid that certainly belongs to no process: a child that has exited. */
async function deadPid(): Promise<number> {
  const c = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await new Promise((r) => c.once('exit', r));
  return c.pid!;
}

function writeLock(image: string, r: Partial<LockRecord>): void {
  const rec: LockRecord = { format: 'presync-lock/1', agentPid: 1, agentStart: null, guestPid: null, guestStart: null, state: 'running', image, updatedAt: '', ...r };
  writeFileSync(lockPath(image), JSON.stringify(rec));
}

/** Locks these tests plant or leave (in the shared lock directory, keyed by inode): removed at exit, before an inode is reused. */
const planted: string[] = [];
process.once('exit', () => {
  for (const p of planted) rmSync(p, { force: true });
});

function setup(): { dir: string; image: string; secret: string } {
  const dir = scratchDir('presync-lock-');
  const image = join(dir, 'guest.img');
  writeFileSync(image, Buffer.alloc(256 * 4096, 3));
  planted.push(lockPath(image));
  const secret = join(dir, 'secret');
  writeFileSync(secret, `${SECRET}\n`);
  return { dir, image, secret };
}

test('a guest left paused by a dead source agent is resumed by presync migrate --recover, and the stale lock removed', { timeout: TEST_GUARD_MS }, async () => {
  const { image } = setup();
  const guest = sleeper();
  try {
    process.kill(guest.pid!, 'SIGSTOP');
    await until('guest stopped', () => processState(guest.pid!) === 'T');
    writeLock(image, { agentPid: await deadPid(), guestPid: guest.pid!, guestStart: processStartTime(guest.pid!), state: 'paused' });
    const r = await runCli(['migrate', '--image', image, '--recover', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.lines[0]?.action, 'resumed');
    await until('guest running', () => processState(guest.pid!) !== 'T');
    assert.equal(existsSync(lockPath(image)), false);
    // Nothing left to recover: a second call says so.
    const again = await runCli(['migrate', '--image', image, '--recover', '--json']);
    assert.equal(again.lines[0]?.action, 'none');
  } finally {
    guest.kill('SIGKILL');
  }
});

test('a stale lock never signals a recycled pid: a guest pid whose start time differs is left alone', { timeout: TEST_GUARD_MS }, async () => {
  const { image } = setup();
  const other = sleeper();
  try {
    process.kill(other.pid!, 'SIGSTOP');
    await until('stopped', () => processState(other.pid!) === 'T');
    writeLock(image, { agentPid: await deadPid(), guestPid: other.pid!, guestStart: '1', state: 'paused' });
    const r = await runCli(['migrate', '--image', image, '--recover', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.lines[0]?.action, 'removed');
    assert.equal(processState(other.pid!), 'T', 'an unrelated process that reuses the pid is not continued');
  } finally {
    other.kill('SIGKILL');
  }
});

test('a lock held by a live agent: --recover and a new migrate both refuse with PRESYNC_ERR_LOCKED', { timeout: TEST_GUARD_MS }, async () => {
  const { image, secret } = setup();
  const agentStandIn = sleeper();
  try {
    writeLock(image, { agentPid: agentStandIn.pid!, agentStart: processStartTime(agentStandIn.pid!) });
    const rec = await runCli(['migrate', '--image', image, '--recover']);
    assert.equal(rec.code, 1);
    assert.match(rec.stderr, /PRESYNC_ERR_LOCKED/);
    const mig = await runCli(['migrate', '--image', image, '--to', '127.0.0.1:1', '--secret-file', secret, '--offline', '--launch-after', '1s']);
    assert.equal(mig.code, 1);
    assert.match(mig.stderr, /PRESYNC_ERR_LOCKED: .* is already being migrated/);
    assert.equal(readLock(image)?.agentPid, agentStandIn.pid, 'the live lock is left as it was');
    // Another name for the same file is the same guest.
    const alias = join(dirname(image), 'alias.img');
    symlinkSync(image, alias);
    const viaAlias = await runCli(['migrate', '--image', alias, '--to', '127.0.0.1:1', '--secret-file', secret, '--offline', '--launch-after', '1s']);
    assert.equal(viaAlias.code, 1);
    assert.match(viaAlias.stderr, /PRESYNC_ERR_LOCKED/);
  } finally {
    agentStandIn.kill('SIGKILL');
  }
});

test('stale locks with nothing to resume are removed: an agent that died before writing its lock, a committed lock whose guest is gone', { timeout: TEST_GUARD_MS }, async () => {
  const { image } = setup();
  writeFileSync(lockPath(image), '');
  const old = new Date(Date.now() - 60_000);
  utimesSync(lockPath(image), old, old);
  const r1 = await runCli(['migrate', '--image', image, '--recover', '--json']);
  assert.equal(r1.code, 0, r1.stderr);
  assert.equal(r1.lines[0]?.action, 'removed');
  // A fresh empty lock is an agent between creating and writing it: live. Dated a
  // minute ahead so that it is still fresh however long a loaded machine takes to start the CLI.
  writeFileSync(lockPath(image), '');
  const ahead = new Date(Date.now() + 60_000);
  utimesSync(lockPath(image), ahead, ahead);
  const r2 = await runCli(['migrate', '--image', image, '--recover']);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /PRESYNC_ERR_LOCKED/);
  writeLock(image, { agentPid: await deadPid(), guestPid: await deadPid(), guestStart: '1', state: 'committed' });
  const r3 = await runCli(['migrate', '--image', image, '--recover', '--json']);
  assert.equal(r3.code, 0, r3.stderr);
  assert.equal(r3.lines[0]?.action, 'removed');
  assert.equal(existsSync(lockPath(image)), false);
});

test('a dead agent\'s lock for a deleted file whose inode another file now has is removed without acting on it', { timeout: TEST_GUARD_MS }, async () => {
  const { dir, image } = setup();
  const guest = sleeper();
  try {
    process.kill(guest.pid!, 'SIGSTOP');
    await until('stopped', () => processState(guest.pid!) === 'T');
    // As if written for an image that lived elsewhere and was deleted: same name (dev-ino), other path.
    const { dev, ino } = statSync(image);
    writeLock(image, { agentPid: await deadPid(), guestPid: guest.pid!, guestStart: processStartTime(guest.pid!), state: 'committed', image: join(dir, 'deleted-long-ago.img'), dev, ino });
    const r = await runCli(['migrate', '--image', image, '--recover', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.lines[0]?.action, 'removed');
    assert.equal(processState(guest.pid!), 'T', 'a guest of another file is neither resumed nor blamed');
    assert.equal(existsSync(lockPath(image)), false);
  } finally {
    guest.kill('SIGKILL');
  }
});

test('a file that is not a presync lock refuses with PRESYNC_ERR_LOCKED and a hint instead of being overwritten', { timeout: TEST_GUARD_MS }, async () => {
  const { image, secret } = setup();
  writeFileSync(lockPath(image), 'something else\n');
  const mig = await runCli(['migrate', '--image', image, '--to', '127.0.0.1:1', '--secret-file', secret, '--offline', '--launch-after', '1s']);
  assert.equal(mig.code, 1);
  assert.match(mig.stderr, /PRESYNC_ERR_LOCKED: .*not a presync lock file/);
  assert.equal(readFileSync(lockPath(image), 'utf8'), 'something else\n');
});

test('in doubt: HANDOVER sent, confirmation lost; the guest stays paused, the lock stays committed, and --recover refuses to resume it', { timeout: TEST_GUARD_MS }, async () => {
  const { dir, image, secret } = setup();
  const guest = sleeper();
  let proxy: FaultProxy | undefined;
  const agent = await TargetAgent.start({
    transport: new TcpTransport(),
    listen: { host: '127.0.0.1', port: 0 },
    imagePath: join(dir, 'target.img'),
    secret: Buffer.from(SECRET),
    // The target starts the guest, then the network dies before it can confirm.
    hook: {
      start: async () => {
        proxy!.cutAll();
        await new Promise((r) => setTimeout(r, 200));
      },
    },
  });
  proxy = await FaultProxy.start({ upstream: agent.address });
  try {
    const mig = spawnCli(['migrate', '--image', image, '--to', `127.0.0.1:${proxy.address.port}`, '--secret-file', secret, '--pid', String(guest.pid), '--launch-after', '500ms', '--json']);
    const code = await mig.exited;
    const result = mig.lines.at(-1)!;
    assert.equal(result.outcome, 'in-doubt', JSON.stringify(result));
    assert.equal((result.error as { code: string }).code, 'PRESYNC_ERR_HANDOVER_IN_DOUBT');
    assert.equal(code, 4, 'in doubt has its own exit status');
    assert.equal(processState(guest.pid!), 'T', 'the source guest stays paused: it may run on the target');
    assert.equal(readLock(image)?.state, 'committed', 'the lock stays, saying the handover began');
    const rec = await runCli(['migrate', '--image', image, '--recover']);
    assert.equal(rec.code, 1);
    assert.match(rec.stderr, /PRESYNC_ERR_HANDOVER_IN_DOUBT: .*Check the target/);
    assert.equal(processState(guest.pid!), 'T', '--recover did not resume it');
    const again = await runCli(['migrate', '--image', image, '--to', `127.0.0.1:${agent.address.port}`, '--secret-file', secret, '--pid', String(guest.pid), '--launch-after', '1s']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /PRESYNC_ERR_HANDOVER_IN_DOUBT/);
  } finally {
    guest.kill('SIGKILL');
    await proxy.close();
    await agent.close();
  }
});
