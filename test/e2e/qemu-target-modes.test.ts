/**
 * The two ways `presync qemu serve` gets a target QEMU besides building one
 * from --kernel: the user's own command line after `--` (with devices the
 * built one never has: a virtio-net NIC and a virtio-rng), and a QEMU someone
 * else started, attached with --attach-qmp. Each migrates the real test
 * guest, which must go on on the target. Plus the refusals: a command line
 * with anonymous RAM (one line, exit 2, no QEMU left), an attached QEMU that
 * is not waiting for a migration, and one that goes away (serve exits 1,
 * without a crash).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CLI } from '../../src/lab/cli-entry.ts';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { QemuGuestController } from '../../src/qemu/qemu-controller.ts';
import { QemuTarget, type QemuTargetEvent } from '../../src/qemu/qemu-target.ts';
import { SerialLog } from '../../src/qemu/serial.ts';
import { attachVm, launchVm, machineArgs, type MachineSpec, type Vm } from '../../src/qemu/vm.ts';
import { FaultProxy } from '../../src/transport/fault-proxy.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { failures, heartbeats, Lab, qemuMissing, waitHealthy, assertContinues } from './qemu-fixture.ts';
import { exitOf, jsonLines } from '../helpers/json-lines.ts';

const SECRET = 'qemu-modes-e2e-secret-0123456789abcdef';

/** Devices the command line presync builds never has: a NIC on user networking and a virtio-rng. */
const EXTRA_DEVICES = ['-netdev', 'user,id=n0,restrict=on', '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56', '-device', 'virtio-rng-pci'];



/** Pids of processes whose command line contains `token`. */
function processesWith(token: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(token)) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out.filter((p) => p !== process.pid);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('qemu serve: the target QEMU from the user\'s command line, or attached', { skip: qemuMissing, timeout: 400_000 }, () => {
  const lab = new Lab();
  const children: ChildProcess[] = [];
  const strayPids: number[] = [];
  const secret = join(lab.dir, 'secret');
  writeFileSync(secret, `${SECRET}\n`);
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const p of strayPids) if (pidAlive(p)) process.kill(p, 'SIGKILL');
    await lab.cleanup();
  });

  /** A source VM with the extra devices and a QMP socket for presync; booted to its first OK. */
  async function sourceVm(name: string): Promise<{ spec: MachineSpec; src: Vm; presyncQmp: string }> {
    const spec = lab.spec({ name, memMiB: 128, guestMem: '32M', workload: 'audio' });
    const presyncQmp = `${lab.paths(name).qmpSocket}-presync`;
    const src = await lab.launch(spec, name, { extraArgs: ['-qmp', `unix:${presyncQmp},server=on,wait=off`, ...EXTRA_DEVICES] });
    await waitHealthy(src);
    return { spec, src, presyncQmp };
  }

  async function migrateTo(presyncQmp: string, listening: Record<string, unknown>): Promise<Record<string, unknown>> {
    const migrate = spawn(
      process.execPath,
      [CLI, 'qemu', 'migrate', '--qmp', presyncQmp, '--to', `127.0.0.1:${listening.port}`, '--qemu-uri', String(listening.qemuUri), '--secret-file', secret, '--launch-after', '4s', '--json'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(migrate);
    let out = '';
    migrate.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const code = await exitOf(migrate);
    const result = JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
    assert.equal(result.outcome, 'done', out.slice(-2000));
    assert.equal(code, 0);
    assert.equal(result.verified, true);
    return result;
  }

  it('serve -- qemu-system-x86_64 …: the user\'s command line (virtio-net + virtio-rng) migrates and the guest goes on', async () => {
    const { spec, src, presyncQmp } = await sourceVm('cl-src');
    const dstRam = join(lab.shm, 'cl-dst.ram');
    const dstSerial = join(lab.dir, 'cl-dst.serial');
    // The same machine and devices as the source, as a user's launcher would write it.
    const command = ['qemu-system-x86_64', ...machineArgs({ ...spec, ram: { kind: 'file', memPath: dstRam, share: true }, serialLog: dstSerial }), ...EXTRA_DEVICES];
    const serve = spawn(process.execPath, [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--qemu-listen', '127.0.0.1:0', '--json', '--', ...command], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(serve);
    const out = jsonLines(serve, 90_000);
    const listening = await out.next((l) => l.event === 'listening');
    assert.equal(listening.mode, 'command');
    assert.equal(listening.image, dstRam, 'the image is the RAM backend\'s mem-path');
    const targetPid = listening.pid as number;
    strayPids.push(targetPid);
    // presync added -incoming defer, -S and its own QMP socket, and kept every device of the user's.
    const argv = readFileSync(`/proc/${targetPid}/cmdline`, 'utf8').split('\0');
    for (const a of ['virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56', 'virtio-rng-pci', '-S', 'defer']) assert.ok(argv.includes(a), `${a} in ${argv.join(' ')}`);

    await migrateTo(presyncQmp, listening);
    const handed = await out.next((l) => l.event === 'handed-over');
    assert.equal(handed.pid, targetPid);
    assert.equal(handed.serial, dstSerial);
    assert.equal(await exitOf(serve), 0);
    assert.ok(pidAlive(targetPid), 'the migrated guest\'s QEMU runs on after serve exits');
    await src.exited;
    await src.serial.flush();
    const lastSrc = Math.max(...heartbeats(src.serial));
    const dst = new SerialLog(dstSerial);
    try {
      await assertContinues(dst, src.serial, lastSrc);
    } finally {
      await dst.close();
      process.kill(targetPid, 'SIGKILL');
    }
  });

  it('serve -- … with two NUMA nodes, each its own RAM file: both synced as one image, the guest goes on', async () => {
    const g = lab.spec({ name: 'numa', memMiB: 128, guestMem: '32M', workload: 'audio' });
    const numaArgs = (ram0: string, ram1: string, serial: string): string[] => [
      'qemu-system-x86_64', '-accel', 'tcg', '-machine', 'pc-i440fx-7.2', '-m', '128M', '-smp', '1',
      '-object', `memory-backend-file,id=node0,size=64M,mem-path=${ram0},share=on`,
      '-object', `memory-backend-file,id=node1,size=64M,mem-path=${ram1},share=on`,
      '-numa', 'node,nodeid=0,cpus=0,memdev=node0', '-numa', 'node,nodeid=1,memdev=node1',
      '-nodefaults', '-vga', 'none', '-display', 'none', '-no-user-config', '-serial', `file:${serial}`,
      '-kernel', g.kernel, '-initrd', g.initrd!, '-append', g.append!, ...EXTRA_DEVICES,
    ];
    const sp = lab.paths('numa-src');
    const presyncQmp = `${sp.qmpSocket}-presync`;
    const srcRams = [join(lab.shm, 'numa-src0.ram'), join(lab.shm, 'numa-src1.ram')];
    const src = await launchVm({ ...g, qmpSocket: sp.qmpSocket, serialLog: sp.serialLog, commandLine: numaArgs(srcRams[0], srcRams[1], sp.serialLog), extraArgs: ['-qmp', `unix:${presyncQmp},server=on,wait=off`] });
    lab.vms.push(src);
    await waitHealthy(src);
    const dstRams = [join(lab.shm, 'numa-dst0.ram'), join(lab.shm, 'numa-dst1.ram')];
    const dstSerial = join(lab.dir, 'numa-dst.serial');
    const serve = spawn(process.execPath, [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--qemu-listen', '127.0.0.1:0', '--json', '--', ...numaArgs(dstRams[0], dstRams[1], dstSerial)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(serve);
    const out = jsonLines(serve, 90_000);
    const listening = await out.next((l) => l.event === 'listening');
    assert.deepEqual(listening.ram, [{ id: 'node0', path: dstRams[0], bytes: 64 << 20 }, { id: 'node1', path: dstRams[1], bytes: 64 << 20 }]);
    const targetPid = listening.pid as number;
    strayPids.push(targetPid);
    const result = await migrateTo(presyncQmp, listening);
    // Both files crossed presync's connection: far more than one node's worth of the guest's buffer would need.
    assert.ok((result.presyncBytes as number) > 0);
    await out.next((l) => l.event === 'handed-over');
    assert.equal(await exitOf(serve), 0);
    await src.exited;
    await src.serial.flush();
    const dst = new SerialLog(dstSerial);
    try {
      await assertContinues(dst, src.serial, Math.max(...heartbeats(src.serial)));
    } finally {
      await dst.close();
      process.kill(targetPid, 'SIGKILL');
    }
  });

  it('serve --attach-qmp: a QEMU the launcher started (without -S) is checked, held and driven, and left running', async () => {
    const { spec, src, presyncQmp } = await sourceVm('at-src');
    const p = lab.paths('at-dst');
    const presyncSock = `${p.qmpSocket}-presync`;
    // The launcher: its own QMP socket (p.qmpSocket) and a second one for presync.
    // No -S: presync's `stop` in status inmigrate must keep the guest from starting before HANDOVER.
    const dst = await launchVm({
      ...spec,
      ram: { kind: 'file', memPath: p.memPath, share: true },
      qmpSocket: p.qmpSocket,
      serialLog: p.serialLog,
      incoming: 'defer',
      extraArgs: ['-qmp', `unix:${presyncSock},server=on,wait=off`, ...EXTRA_DEVICES],
    });
    lab.vms.push(dst);
    const serve = spawn(
      process.execPath,
      [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--qemu-listen', '127.0.0.1:0', '--image', p.memPath, '--attach-qmp', presyncSock, '--machine', spec.machine!, '--json'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(serve);
    const out = jsonLines(serve, 90_000);
    const listening = await out.next((l) => l.event === 'listening');
    assert.equal(listening.mode, 'attach');
    assert.equal(listening.pid, null);
    // presync set it listening: the launcher's own QMP sees where.
    assert.equal((await dst.qmp.execute('query-migrate')).socketAddresses.length, 1);

    await migrateTo(presyncQmp, listening);
    const handed = await out.next((l) => l.event === 'handed-over');
    assert.equal(handed.qmp, presyncSock);
    assert.equal(await exitOf(serve), 0);
    assert.equal(dst.hasExited, false, 'serve left the attached QEMU running');
    assert.equal((await dst.qmp.execute('query-status')).running, true);
    await src.exited;
    await src.serial.flush();
    await assertContinues(dst.serial, src.serial, Math.max(...heartbeats(src.serial)));
  });

  it('refuses a command line with anonymous RAM: one line naming the option to add, exit 2, no QEMU started', async () => {
    const g = lab.spec({ name: 'anon' });
    const token = `presync-anon-${process.pid}`;
    const r = spawnSync(
      process.execPath,
      [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--qemu-listen', '127.0.0.1:0', '--',
        'qemu-system-x86_64', '-name', token, '-machine', 'pc-i440fx-7.2', '-m', '128M', '-nodefaults', '-display', 'none', '-kernel', g.kernel],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(r.status, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^presync qemu: PRESYNC_ERR_QEMU_CMDLINE: the guest's RAM is anonymous .*add -object memory-backend-file,id=ram0,size=128M,mem-path=.*,share=on -machine memory-backend=ram0$/);
    assert.deepEqual(processesWith(token), [], 'no QEMU was started');
  });

  it('--attach-qmp refuses a QEMU that is not waiting for a migration, and ends with exit 1 when the attached QEMU goes away', async () => {
    const spec = lab.spec({ name: 'at-bad' });
    const p = lab.paths('at-bad');
    // Started without -incoming: status prelaunch (-S), not inmigrate.
    const plain = await launchVm({ ...spec, qmpSocket: p.qmpSocket, serialLog: p.serialLog, startPaused: true, extraArgs: ['-qmp', `unix:${p.qmpSocket}-presync,server=on,wait=off`] });
    lab.vms.push(plain);
    const r = spawnSync(
      process.execPath,
      [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--qemu-listen', '127.0.0.1:0', '--image', p.memPath, '--attach-qmp', `${p.qmpSocket}-presync`],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr.trim(), /^presync qemu: PRESYNC_ERR_QEMU: .* not inmigrate: start it with -incoming defer/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.equal(plain.hasExited, false, 'serve did not stop a QEMU it did not start');

    const q = lab.paths('at-gone');
    const waiting = await launchVm({ ...spec, ram: { kind: 'file', memPath: q.memPath, share: true }, qmpSocket: q.qmpSocket, serialLog: q.serialLog, incoming: 'defer', startPaused: true, extraArgs: ['-qmp', `unix:${q.qmpSocket}-presync,server=on,wait=off`] });
    lab.vms.push(waiting);
    const serve = spawn(process.execPath, [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--qemu-listen', '127.0.0.1:0', '--image', q.memPath, '--attach-qmp', `${q.qmpSocket}-presync`, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(serve);
    let stderr = '';
    serve.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const out = jsonLines(serve, 90_000);
    await out.next((l) => l.event === 'listening');
    await waiting.kill();
    assert.equal(await exitOf(serve), 1, stderr);
    const spoiled = await out.next((l) => l.event === 'target-spoiled');
    assert.equal(spoiled.reason, 'gone');
    assert.equal(stderr, '', 'no stack trace, nothing on stderr in --json mode');
  });
  it('--attach-qmp: the connection breaks after the device state, before HANDOVER; the attached QEMU (no -S) never ran the guest, serve exits 3 and leaves it to its launcher', async () => {
    const { spec, src, presyncQmp } = await sourceVm('atf-src');
    const p = lab.paths('atf-dst');
    const presyncSock = `${p.qmpSocket}-presync`;
    const dst = await launchVm({ ...spec, ram: { kind: 'file', memPath: p.memPath, share: true }, qmpSocket: p.qmpSocket, serialLog: p.serialLog, incoming: 'defer', extraArgs: ['-qmp', `unix:${presyncSock},server=on,wait=off`, ...EXTRA_DEVICES] });
    lab.vms.push(dst);
    const serve = spawn(process.execPath, [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--qemu-listen', '127.0.0.1:0', '--image', p.memPath, '--attach-qmp', presyncSock, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(serve);
    const out = jsonLines(serve, 90_000);
    const listening = await out.next((l) => l.event === 'listening');
    const vm = await attachVm(presyncQmp);
    const proxy = await FaultProxy.start({ upstream: { host: '127.0.0.1', port: listening.port as number } });
    try {
      let targetStatusAfterCommit = '';
      let lastSrc = -1;
      class CutAfterCommit extends QemuGuestController {
        override async commit(): Promise<void> {
          await super.commit();
          // QEMU's stream is complete: without -S the attached QEMU would start the guest now, unless presync's `stop` held it.
          targetStatusAfterCommit = (await dst.qmp.execute('query-status')).status;
          await src.serial.flush();
          lastSrc = Math.max(...heartbeats(src.serial));
          proxy.cutAll('reset');
          // Let the source see the reset before it sends HANDOVER: a HANDOVER written into a dying socket would be in doubt, not rolled back.
          await new Promise((r) => setTimeout(r, 300));
        }
      }
      const controller = new CutAfterCommit(vm.qmp, { targetUri: String(listening.qemuUri) });
      const m = new SourceMigration({
        transport: new TcpTransport(),
        to: proxy.address,
        secret: Buffer.from(SECRET),
        imagePath: vm.memPath,
        policy: createPolicy('presync', { geometry: { pageSize: 4096, pageCount: vm.memBytes / 4096 }, seed: 1 }),
        controller,
        epochMs: 100,
        reconnectAttempts: 0,
      });
      setTimeout(() => m.launch(), 3000);
      const r = await m.run();
      assert.equal(r.outcome, 'rolled-back', JSON.stringify(r.error));
      assert.notEqual(targetStatusAfterCommit, 'running', 'the attached QEMU must not run the guest before HANDOVER');
      assert.equal(await exitOf(serve), 3);
      const spoiled = await out.next((l) => l.event === 'target-spoiled');
      assert.equal(spoiled.reason, 'attempt-failed');
      assert.equal(dst.hasExited, false, 'serve did not kill the QEMU it did not start');
      assert.equal((await dst.qmp.execute('query-status')).running, false, 'the attached QEMU still holds the guest paused');
      assert.equal((await vm.qmp.execute('query-status')).running, true, 'the source guest runs after the rollback');
      const ok = await src.serial.waitForLine(/^OK (\d+)/, 30_000, src.serial.nextIndex);
      assert.ok(Number(ok.match[1]) > lastSrc, 'the source guest makes progress');
      assert.deepEqual(failures(src.serial), []);
    } finally {
      await proxy.close();
      vm.qmp.close();
    }
  });

  it('a target QEMU started from the user\'s command line that dies is started again from the same command line', async () => {
    const spec = lab.spec({ name: 'rs' });
    const p = lab.paths('rs-dst');
    const commandLine = ['qemu-system-x86_64', ...machineArgs({ ...spec, ram: { kind: 'file', memPath: p.memPath, share: true }, serialLog: p.serialLog }), ...EXTRA_DEVICES];
    const events: QemuTargetEvent[] = [];
    const target = await QemuTarget.start({
      launch: { ...spec, ram: { kind: 'file', memPath: p.memPath, share: true }, qmpSocket: p.qmpSocket, serialLog: p.serialLog, commandLine },
      listenUri: 'tcp:127.0.0.1:0',
      onEvent: (e) => events.push(e),
    });
    try {
      const first = target.vm!;
      await first.kill();
      const deadline = Date.now() + 30_000;
      while (!(target.vm && target.vm !== first && !target.vm.hasExited) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const second = target.vm!;
      assert.ok(second && second !== first, JSON.stringify(events));
      const argv = readFileSync(`/proc/${second.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      assert.deepEqual(argv, [...commandLine, '-qmp', `unix:${p.qmpSocket},server=on,wait=off`, '-incoming', 'defer', '-S']);
      assert.equal((await second.qmp.execute('query-status')).status, 'inmigrate');
    } finally {
      await target.close();
    }
  });
});
