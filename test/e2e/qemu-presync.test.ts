/**
 * presync migrating real QEMU VMs: RAM synced by presync, device state by
 * QEMU's own stream (x-ignore-shared). One migration through the CLI (three
 * processes: the VM, `presync qemu serve`, `presync qemu migrate`), one
 * in-process migration whose target QEMU dies mid-switchover.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { QemuGuestController } from '../../src/qemu/qemu-controller.ts';
import { claimImageGeometry, QemuTarget, type QemuTargetEvent } from '../../src/qemu/qemu-target.ts';
import { SerialLog } from '../../src/qemu/serial.ts';
import { attachVm, matchingTargetOptions } from '../../src/qemu/vm.ts';
import { FaultProxy } from '../../src/transport/fault-proxy.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { failures, heartbeats, Lab, qemuMissing, waitHealthy, assertContinues } from './qemu-fixture.ts';

const ROOT = resolve(import.meta.dirname, '../..');
import { CLI } from '../../src/lab/cli-entry.ts';
import { jsonLines } from '../helpers/json-lines.ts';
const SECRET = 'qemu-e2e-secret-0123456789abcdef';


describe('presync migrates real QEMU VMs', { skip: qemuMissing, timeout: 300_000 }, () => {
  const lab = new Lab();
  const children: ChildProcess[] = [];
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await lab.cleanup();
  });

  it('through the CLI: qemu serve + qemu migrate; the guest continues on the target and the source QEMU quits', async (t) => {
    const spec = lab.spec({ name: 'cli-src', memMiB: 128, guestMem: '32M', workload: 'audio' });
    const presyncQmp = `${lab.paths('cli-src').qmpSocket}-presync`;
    const src = await lab.launch(spec, 'cli-src', { extraArgs: ['-qmp', `unix:${presyncQmp},server=on,wait=off`] });
    await waitHealthy(src);
    const secret = join(lab.dir, 'secret');
    writeFileSync(secret, `${SECRET}\n`);
    const dstRam = join(lab.shm, 'cli-dst.ram');
    const dstSerial = join(lab.dir, 'cli-dst.serial');

    const serve = spawn(
      process.execPath,
      [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--image', dstRam, '--secret-file', secret, '--qemu-listen', '127.0.0.1:0',
        '--kernel', spec.kernel, '--initrd', spec.initrd!, '--append', spec.append!, '--memory', '128M', '--machine', spec.machine!, '--serial', dstSerial, '--json'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(serve);
    const serveOut = jsonLines(serve);
    const listening = await serveOut.next((l) => l.event === 'listening');
    assert.match(String(listening.qemuUri), /^tcp:127\.0\.0\.1:[1-9]\d*$/);

    const migrate = spawn(
      process.execPath,
      [CLI, 'qemu', 'migrate', '--qmp', presyncQmp, '--to', `127.0.0.1:${listening.port}`, '--qemu-uri', String(listening.qemuUri), '--secret-file', secret, '--launch-after', '4s', '--json'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(migrate);
    let out = '';
    migrate.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => migrate.once('exit', (c) => r(c)));
    const result = JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown> & { qemu: Record<string, number | null> };
    t.diagnostic(`cli result: ${JSON.stringify(result)}`);
    // --json streams one event per line before the result: phases, and progress whose "in sync" never runs backwards.
    const events = out.trim().split('\n').slice(0, -1).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(events.some((e) => e.event === 'phase' && e.phase === 'launched'), 'a launched phase event');
    const inSync = events.filter((e) => e.event === 'progress').map((e) => e.inSyncPeakPercent as number);
    assert.ok(inSync.length >= 2, `${inSync.length} progress events`);
    assert.ok(inSync.every((v, i) => i === 0 || v >= inSync[i - 1]), `in sync never decreases: ${inSync.join(', ')}`);
    assert.equal(result.outcome, 'done', out);
    assert.equal(code, 0);
    assert.equal(result.verified, true);
    for (const k of ['launchToRunningMs', 'downtimeMs', 'engineDowntimeMs', 'presyncBytes', 'finalBytes', 'residualPagesAtLaunch']) assert.equal(typeof result[k], 'number', k);
    assert.ok((result.presyncBytes as number) > 0, 'pages were pre-synchronized before launch');
    assert.ok((result.presyncBytes as number) + (result.finalBytes as number) > 16 << 20, "the guest's RAM went through presync's connection");
    // QEMU's stream carried device state and ROMs only, far below the guest's 32 MiB buffer.
    assert.ok((result.qemu.transferredBytes ?? Infinity) < 4 << 20, `QEMU stream ${result.qemu.transferredBytes} B`);
    assert.equal(typeof result.qemu.downtimeMs, 'number');

    const handed = await serveOut.next((l) => l.event === 'handed-over');
    assert.equal(typeof handed.pid, 'number');
    // The source QEMU quit after the target confirmed: the guest never runs twice.
    const ex = await src.exited;
    assert.equal(ex.signal, null);
    await src.serial.flush();
    const lastSrc = Math.max(...heartbeats(src.serial));
    const dst = new SerialLog(dstSerial);
    try {
      await assertContinues(dst, src.serial, lastSrc);
    } finally {
      await dst.close();
      process.kill(handed.pid as number, 'SIGKILL');
      serve.kill('SIGTERM');
    }
    assert.equal(await new Promise<number | null>((r) => (serve.exitCode !== null ? r(serve.exitCode) : serve.once('exit', (c) => r(c)))), 0);
  });

  it('through the CLI: SIGINT to qemu migrate during presync rolls back: result printed, exit 3, the source VM runs on, no lock or control socket left', async () => {
    const spec = lab.spec({ name: 'sig-src', memMiB: 128, guestMem: '32M', workload: 'audio' });
    const presyncQmp = `${lab.paths('sig-src').qmpSocket}-presync`;
    const src = await lab.launch(spec, 'sig-src', { extraArgs: ['-qmp', `unix:${presyncQmp},server=on,wait=off`] });
    await waitHealthy(src);
    const secret = join(lab.dir, 'secret');
    writeFileSync(secret, `${SECRET}\n`);
    const lockDir = join(lab.dir, 'sig-locks');
    const control = join(lab.dir, 'sig.sock');
    const serve = spawn(
      process.execPath,
      [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--image', join(lab.shm, 'sig-dst.ram'), '--secret-file', secret, '--qemu-listen', '127.0.0.1:0',
        '--kernel', spec.kernel, '--initrd', spec.initrd!, '--append', spec.append!, '--memory', '128M', '--machine', spec.machine!, '--serial', join(lab.dir, 'sig-dst.serial'), '--json'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(serve);
    const serveOut = jsonLines(serve);
    const listening = await serveOut.next((l) => l.event === 'listening');
    const migrate = spawn(
      process.execPath,
      [CLI, 'qemu', 'migrate', '--qmp', presyncQmp, '--to', `127.0.0.1:${listening.port}`, '--qemu-uri', String(listening.qemuUri), '--secret-file', secret, '--control', control, '--json'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PRESYNC_LOCK_DIR: lockDir } },
    );
    children.push(migrate);
    let stderr = '';
    migrate.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const out = jsonLines(migrate);
    await out.next((l) => l.event === 'progress');
    assert.ok(readdirSync(lockDir).length > 0, 'the migration holds its lock');
    migrate.kill('SIGINT');
    const code = await new Promise<number | null>((r) => (migrate.exitCode !== null ? r(migrate.exitCode) : migrate.once('exit', (c) => r(c))));
    const result = await out.next((l) => l.event === 'result');
    assert.equal(result.outcome, 'rolled-back', stderr);
    assert.equal((result.error as { code: string }).code, 'PRESYNC_ERR_ABORTED');
    assert.equal(code, 3, stderr);
    assert.deepEqual(readdirSync(lockDir), [], 'no lock left');
    assert.equal(existsSync(control), false, 'no control socket left');
    const end = await serveOut.next((l) => l.event === 'session-end');
    assert.notEqual(end.outcome, 'handed-over');
    // The source VM was never stopped for good: it runs and its guest makes progress.
    assert.equal((await src.qmp.execute('query-status')).running, true);
    const mark = src.serial.nextIndex;
    await src.serial.waitForLine(/^OK (\d+)/, 30_000, mark);
    assert.deepEqual(failures(src.serial), []);
    // serve stops its waiting target QEMU on SIGTERM; a SIGKILL from after() would orphan it.
    serve.kill('SIGTERM');
    assert.equal(await new Promise<number | null>((r) => (serve.exitCode !== null ? r(serve.exitCode) : serve.once('exit', (c) => r(c)))), 0);
  });

  it('in process: the connection breaks after QEMU sent the device state but before HANDOVER; the target QEMU never ran the guest, the source resumes', async () => {
    const spec = lab.spec({ name: 'cc-src', memMiB: 128, guestMem: '32M', workload: 'audio' });
    const attachSock = `${lab.paths('cc-src').qmpSocket}-presync`;
    const src = await lab.launch(spec, 'cc-src', { extraArgs: ['-qmp', `unix:${attachSock},server=on,wait=off`] });
    await waitHealthy(src);
    const vm = await attachVm(attachSock);
    const dstPaths = lab.paths('cc-dst');
    claimImageGeometry(dstPaths.memPath, { pageSize: 4096, pageCount: spec.memBytes / 4096 });
    const events: QemuTargetEvent[] = [];
    const target = await QemuTarget.start({ launch: matchingTargetOptions(vm, dstPaths), listenUri: 'tcp:127.0.0.1:0', onEvent: (e) => events.push(e) });
    const secret = Buffer.from(SECRET);
    const agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dstPaths.memPath, secret, force: true, hook: target.hook() });
    const proxy = await FaultProxy.start({ upstream: agent.address });
    try {
      const inner = new QemuGuestController(vm.qmp, { targetUri: target.uri });
      const firstQemu = target.vm!;
      let targetStatusAfterCommit = '';
      let lastSrc = -1;
      const controller = Object.assign(Object.create(inner) as QemuGuestController, {
        commit: async () => {
          await inner.commit();
          // QEMU's own stream is complete: the target QEMU holds the whole guest.
          targetStatusAfterCommit = (await firstQemu.qmp.execute('query-status')).status;
          await src.serial.flush();
          lastSrc = Math.max(...heartbeats(src.serial));
          proxy.cutAll('reset');
        },
      });
      const m = new SourceMigration({
        transport: new TcpTransport(),
        to: proxy.address,
        secret,
        imagePath: vm.memPath,
        policy: createPolicy('presync', { geometry: { pageSize: 4096, pageCount: vm.memBytes / 4096 }, seed: 1 }),
        controller,
        epochMs: 100,
        reconnectAttempts: 0,
      });
      setTimeout(() => m.launch(), 3000);
      const r = await m.run();
      assert.equal(r.outcome, 'rolled-back', JSON.stringify(r.error));
      // -S: the incoming migration completed, yet the guest did not start there.
      assert.notEqual(targetStatusAfterCommit, 'running', 'the target QEMU must not run the guest before HANDOVER');
      assert.equal(events.some((e) => e.event === 'qemu-running'), false, 'the target never ran the guest');
      assert.equal((await vm.qmp.execute('query-status')).running, true, 'source guest runs after rollback');
      const mark = src.serial.nextIndex;
      const ok = await src.serial.waitForLine(/^OK (\d+)/, 30_000, mark);
      assert.ok(Number(ok.match[1]) > lastSrc, 'the source guest makes progress after rollback');
      assert.deepEqual(failures(src.serial), []);
    } finally {
      await proxy.close();
      await agent.close();
      await target.close({ alsoRunning: true });
      vm.qmp.close();
    }
  });

  it('in process: the target QEMU dies at pre-switchover; rolled back, the source runs on, the target QEMU is replaced', async () => {
    const spec = lab.spec({ name: 'rb2-src', memMiB: 128, guestMem: '32M', workload: 'text' });
    const attachSock = `${lab.paths('rb2-src').qmpSocket}-presync`;
    const src = await lab.launch(spec, 'rb2-src', { extraArgs: ['-qmp', `unix:${attachSock},server=on,wait=off`] });
    await waitHealthy(src);
    const vm = await attachVm(attachSock);
    const dstPaths = lab.paths('rb2-dst');
    const events: QemuTargetEvent[] = [];
    claimImageGeometry(dstPaths.memPath, { pageSize: 4096, pageCount: spec.memBytes / 4096 });
    const target = await QemuTarget.start({ launch: matchingTargetOptions(vm, dstPaths), listenUri: 'tcp:127.0.0.1:0', onEvent: (e) => events.push(e) });
    const secret = Buffer.from(SECRET);
    const agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dstPaths.memPath, secret, force: true, hook: target.hook() });
    try {
      const inner = new QemuGuestController(vm.qmp, { targetUri: target.uri });
      let lastSrc = -1;
      const firstQemu = target.vm!;
      // The target QEMU dies while the source sits at pre-switchover, before presync's final round.
      const controller = Object.assign(Object.create(inner) as QemuGuestController, {
        pause: async () => {
          await inner.pause();
          await src.serial.flush();
          lastSrc = Math.max(...heartbeats(src.serial));
          await firstQemu.kill();
        },
      });
      const m = new SourceMigration({
        transport: new TcpTransport(),
        to: agent.address,
        secret,
        imagePath: vm.memPath,
        policy: createPolicy('presync', { geometry: { pageSize: 4096, pageCount: vm.memBytes / 4096 }, seed: 1 }),
        controller,
        epochMs: 100,
      });
      setTimeout(() => m.launch(), 3000);
      const r = await m.run();
      assert.equal(r.outcome, 'rolled-back', JSON.stringify(r.error));
      assert.ok(r.error, 'the failure is reported');
      assert.equal((await vm.qmp.execute('query-status')).running, true, 'source guest runs after rollback');
      const mark = src.serial.nextIndex;
      const ok = await src.serial.waitForLine(/^OK (\d+)/, 30_000, mark);
      assert.ok(Number(ok.match[1]) > lastSrc, 'the source guest makes progress after rollback');
      assert.ok(heartbeats(src.serial, mark).every((v) => v > lastSrc), 'heartbeats continue from where they stopped');
      assert.deepEqual(failures(src.serial), []);
      // A fresh target QEMU waits for the next attempt.
      const deadline = Date.now() + 20_000;
      while (!(target.vm && target.vm !== firstQemu && !target.vm.hasExited) && Date.now() < deadline) await new Promise((r2) => setTimeout(r2, 100));
      assert.ok(target.vm && target.vm !== firstQemu, 'target QEMU restarted');
      assert.ok(events.some((e) => e.event === 'qemu-ready' && e.attempt === 2), JSON.stringify(events));
      assert.equal((await target.vm.qmp.execute('query-status')).running, false, 'the new target QEMU waits (inmigrate)');
    } finally {
      await agent.close();
      await target.close({ alsoRunning: true });
      vm.qmp.close();
    }
  });
});
