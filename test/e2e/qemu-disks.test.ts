/**
 * Disks of a migrated QEMU VM: a guest (the test guest plus virtio-blk, built
 * by scripts/build-disk-guest.sh) writes sequence-numbered records to its
 * disk and reads them back from the device throughout ("DISK n" / "DISK BAD").
 *
 * - shared storage: both QEMUs open the same image file (QEMU's own
 *   inactivate/activate handoff; the target activates only at `cont`);
 * - non-shared: `qemu migrate --copy-storage` mirrors the disk into the
 *   target's NBD export from the start of presync, completes the mirror in
 *   the pause, and --verify-disk compares both disks before the target runs;
 * - failures mid-mirror and at pre-switchover leave the source running on
 *   its own disk, its records intact.
 *
 * The first cases run both agents through the CLI (`qemu serve --nbd-listen
 * -- qemu-system-x86_64 …`, `qemu migrate --copy-storage`); the others run
 * the source through the CLI and the target (a QemuTarget with a disk on its
 * command line, and a TargetAgent) in this process, so the test can compare
 * the disk files at the moment both guests are stopped, or fail the handover.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI } from '../../src/lab/cli-entry.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import type { HandoverHook } from '../../src/engine/target-session.ts';
import { claimImageGeometry, QemuTarget, type QemuTargetEvent } from '../../src/qemu/qemu-target.ts';
import { SerialLog } from '../../src/qemu/serial.ts';
import { machineArgs, matchingTargetOptions, type Vm } from '../../src/qemu/vm.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { Lab, qemuMissing, waitHealthy } from './qemu-fixture.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const SECRET = 'qemu-disk-e2e-secret-0123456789ab';
const DISK_BYTES = 16 << 20;

function diskArgs(file: string): string[] {
  return ['-drive', `file=${file},format=raw,if=none,id=disk0`, '-device', 'virtio-blk-pci,drive=disk0,id=vd0'];
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => res(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** The "DISK n" counters the guest printed, and its "DISK BAD" lines. */
function diskLines(log: SerialLog, from = 0): { seqs: number[]; bad: string[] } {
  const seqs: number[] = [];
  const bad: string[] = [];
  for (const { text } of log.lines(from)) {
    const m = /^DISK (\d+)$/.exec(text);
    if (m) seqs.push(Number(m[1]));
    else if (text.startsWith('DISK BAD')) bad.push(text);
  }
  return { seqs, bad };
}

async function waitDiskPast(log: SerialLog, n: number, timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (let from = 0; ; ) {
    const l = await log.waitForLine(/^DISK (\d+)$/, Math.max(1000, deadline - Date.now()), from);
    const v = Number(l.match[1]);
    if (v > n) return v;
    from = l.index + 1;
  }
}

interface Rig {
  src: Vm;
  presyncQmp: string;
  target: QemuTarget;
  agent: TargetAgent;
  events: QemuTargetEvent[];
  dstDisk: string;
  dstSerial: string;
  nbdPort: number;
  secretFile: string;
}

describe('disks of migrated QEMU VMs', { skip: qemuMissing, timeout: 600_000 }, () => {
  const lab = new Lab();
  const children: ChildProcess[] = [];
  const closers: (() => Promise<void>)[] = [];
  let initrd = '';
  before(() => {
    execFileSync('bash', [join(ROOT, 'scripts/build-disk-guest.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
    initrd = join(ROOT, 'test-guest/build/initrd-disk.img');
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const c of closers.reverse()) await c().catch(() => undefined);
    await lab.cleanup();
  });

  async function rig(
    name: string,
    o: { shared: boolean; hook?: (inner: HandoverHook, dstDisk: string, srcDisk: string) => HandoverHook; atVerifyPhase?: (dstDisk: string) => void },
  ): Promise<Rig> {
    const spec = { ...lab.spec({ name: `${name}-src`, memMiB: 128, guestMem: '16M', workload: 'text' }), initrd };
    const srcDisk = join(lab.dir, `${name}-src.raw`);
    writeFileSync(srcDisk, '');
    execFileSync('truncate', ['-s', String(DISK_BYTES), srcDisk]);
    const dstDisk = o.shared ? srcDisk : join(lab.dir, `${name}-dst.raw`);
    if (!o.shared) {
      writeFileSync(dstDisk, '');
      execFileSync('truncate', ['-s', String(DISK_BYTES), dstDisk]);
    }
    const presyncQmp = `${lab.paths(`${name}-src`).qmpSocket}-presync`;
    const src = await lab.launch(spec, `${name}-src`, { extraArgs: ['-qmp', `unix:${presyncQmp},server=on,wait=off`, ...diskArgs(srcDisk)] });
    await waitHealthy(src);
    await waitDiskPast(src.serial, 10);
    const dstPaths = lab.paths(`${name}-dst`);
    claimImageGeometry(dstPaths.memPath, { pageSize: 4096, pageCount: spec.memBytes / 4096 });
    const events: QemuTargetEvent[] = [];
    const nbdPort = await freePort();
    const target = await QemuTarget.start({
      launch: matchingTargetOptions(spec, { ...dstPaths, extraArgs: diskArgs(dstDisk) }),
      listenUri: 'tcp:127.0.0.1:0',
      ...(o.shared ? {} : { nbd: { listen: { host: '127.0.0.1', port: nbdPort } } }),
      onEvent: (e) => events.push(e),
    });
    closers.push(() => target.close({ alsoRunning: true }));
    const hook = o.hook ? o.hook(target.hook(), dstDisk, srcDisk) : target.hook();
    const agent = await TargetAgent.start({
      transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dstPaths.memPath, secret: Buffer.from(SECRET), force: true, hook,
      // As qemu serve does: the source's mirrors completed before its verify phase.
      onEvent: (e) => {
        if (e.event !== 'phase' || e.phase !== 'verify') return;
        o.atVerifyPhase?.(dstDisk);
        target.prehashDisks();
      },
    });
    closers.push(() => agent.close());
    const secretFile = join(lab.dir, `${name}.secret`);
    writeFileSync(secretFile, `${SECRET}\n`);
    return { src, presyncQmp, target, agent, events, dstDisk, dstSerial: dstPaths.serialLog, nbdPort, secretFile };
  }

  /** Where `qemu migrate` finds the source VM and the target. */
  interface Ends {
    presyncQmp: string;
    secretFile: string;
    agentPort: number;
    qemuUri: string;
  }
  const ends = (r: Rig): Ends => ({ presyncQmp: r.presyncQmp, secretFile: r.secretFile, agentPort: r.agent.address.port, qemuUri: r.target.uri });

  function migrate(r: Ends, extra: string[]): { child: ChildProcess; done: Promise<{ code: number | null; result: Record<string, unknown>; lines: Record<string, unknown>[]; stderr: string }> } {
    const child = spawn(
      process.execPath,
      [CLI, 'qemu', 'migrate', '--qmp', r.presyncQmp, '--to', `127.0.0.1:${r.agentPort}`, '--qemu-uri', r.qemuUri, '--secret-file', r.secretFile, '--json', ...extra],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PRESYNC_LOCK_DIR: join(lab.dir, 'locks') } },
    );
    children.push(child);
    let out = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = new Promise<{ code: number | null; result: Record<string, unknown>; lines: Record<string, unknown>[]; stderr: string }>((res) =>
      child.once('exit', (code) => {
        const lines = out
          .trim()
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        res({ code, result: lines.find((l) => l.event === 'result') ?? lines[lines.length - 1] ?? {}, lines, stderr });
      }),
    );
    return { child, done };
  }

  /** The source VM runs on its own disk: records keep coming, each read back from the device intact. */
  async function assertSourceRunsOn(r: Rig): Promise<void> {
    assert.equal((await r.src.qmp.execute('query-status')).running, true, 'the source VM runs');
    await r.src.serial.flush();
    const before = Math.max(...diskLines(r.src.serial).seqs);
    await waitDiskPast(r.src.serial, before + 20);
    assert.deepEqual(diskLines(r.src.serial).bad, [], 'every record read back from the source disk is intact');
    assert.deepEqual(await r.src.qmp.execute('query-block-jobs'), [], 'no mirror job left on the source');
    const nodes = (await r.src.qmp.execute('query-block')).map((b) => b.inserted?.nodeName ?? '');
    assert.ok(!nodes.some((n) => n.startsWith('presync-')), `no presync node left: ${nodes.join(', ')}`);
  }

  /** `qemu serve --nbd-listen -- qemu-system-x86_64 …` for a source spec, with its own disk file; its JSON lines. */
  async function serveCli(name: string, spec: ReturnType<typeof lab.spec>, nbdPort: number, secretFile: string) {
    const dstDisk = join(lab.dir, `${name}-dst.raw`);
    writeFileSync(dstDisk, '');
    execFileSync('truncate', ['-s', String(DISK_BYTES), dstDisk]);
    const dstSerial = join(lab.dir, `${name}-dst.serial`);
    const command = ['qemu-system-x86_64', ...machineArgs({ ...spec, ram: { kind: 'file', memPath: join(lab.shm, `${name}-dst.ram`), share: true }, serialLog: dstSerial }), ...diskArgs(dstDisk)];
    const serve = spawn(process.execPath, [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secretFile, '--qemu-listen', '127.0.0.1:0', '--nbd-listen', `127.0.0.1:${nbdPort}`, '--json', '--', ...command], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(serve);
    const lines: Record<string, unknown>[] = [];
    const waiters = new Set<() => void>();
    createInterface({ input: serve.stdout! }).on('line', (l) => {
      if (!l.startsWith('{')) return;
      lines.push(JSON.parse(l) as Record<string, unknown>);
      for (const w of [...waiters]) w();
    });
    const next = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 90_000) =>
      new Promise<Record<string, unknown>>((res, rej) => {
        const t = setTimeout(() => rej(new Error(`serve: timed out; lines: ${JSON.stringify(lines).slice(0, 2000)}`)), timeoutMs);
        const check = (): void => {
          const hit = lines.find(pred);
          if (!hit) return;
          clearTimeout(t);
          waiters.delete(check);
          res(hit);
        };
        waiters.add(check);
        check();
      });
    const exited = new Promise<number | null>((r) => serve.once('exit', (c) => r(c)));
    closers.push(async () => {
      if (serve.exitCode === null) serve.kill('SIGTERM');
      await exited;
    });
    return { serve, lines, next, exited, dstDisk, dstSerial };
  }

  it('through both CLIs: qemu serve --nbd-listen -- qemu-system-x86_64 … and qemu migrate --copy-storage all --verify-disk; the guest writes on from the target disk', async (t) => {
    const spec = { ...lab.spec({ name: 'cli-src', memMiB: 128, guestMem: '16M', workload: 'text' }), initrd };
    const srcDisk = join(lab.dir, 'cli-src.raw');
    writeFileSync(srcDisk, '');
    execFileSync('truncate', ['-s', String(DISK_BYTES), srcDisk]);
    const presyncQmp = `${lab.paths('cli-src').qmpSocket}-presync`;
    const src = await lab.launch(spec, 'cli-src', { extraArgs: ['-qmp', `unix:${presyncQmp},server=on,wait=off`, ...diskArgs(srcDisk)] });
    await waitHealthy(src);
    await waitDiskPast(src.serial, 10);
    const secretFile = join(lab.dir, 'cli.secret');
    writeFileSync(secretFile, `${SECRET}\n`);
    const nbdPort = await freePort();
    const sv = await serveCli('cli', spec, nbdPort, secretFile);
    const listening = await sv.next((l) => l.event === 'listening');
    assert.equal(listening.nbd, `127.0.0.1:${nbdPort}`);
    const ready = await sv.next((l) => l.event === 'qemu-ready');
    assert.deepEqual(ready.disks, ['disk0']);
    const targetPid = listening.pid as number;
    closers.push(async () => {
      try {
        process.kill(targetPid, 'SIGKILL');
      } catch {
        /* gone */
      }
    });
    const r: Ends = { presyncQmp, secretFile, agentPort: listening.port as number, qemuUri: String(listening.qemuUri) };
    const { code, result, stderr } = await migrate(r, ['--copy-storage', 'all', '--nbd', String(listening.nbd), '--verify-disk', '--launch-when-ready']).done;
    t.diagnostic(`result: ${JSON.stringify(result)}`);
    assert.equal(result.outcome, 'done', stderr);
    assert.equal(code, 0);
    assert.equal((result.qemu as Record<string, unknown>).diskVerified, true);
    const verified = await sv.next((l) => l.event === 'disk-verified');
    assert.deepEqual(verified.disks, ['disk0']);
    await sv.next((l) => l.event === 'handed-over');
    assert.equal(await sv.exited, 0);
    await src.exited;
    const lastSrc = Math.max(...diskLines(src.serial).seqs);
    const dst = new SerialLog(sv.dstSerial);
    closers.push(() => dst.close());
    await waitDiskPast(dst, lastSrc + 20);
    assert.deepEqual(diskLines(dst).bad, []);
    assert.deepEqual(diskLines(src.serial).bad, []);
  });

  it('non-shared disk: mirrored from presync start, completed in the pause; the target disk equals the source disk bit for bit with both guests stopped', async (t) => {
    let compared: { equal: boolean; bytes: number } | undefined;
    const r = await rig('copy', {
      shared: false,
      // At HANDOVER both guests are stopped (the source after its stream completed, the target held by -S): compare the files themselves.
      hook: (inner, dst, src) => ({
        start: async (ctx) => {
          const a = readFileSync(src);
          const b = readFileSync(dst);
          compared = { equal: a.equals(b), bytes: a.length };
          await inner.start(ctx);
        },
      }),
    });
    const m = migrate(ends(r), ['--copy-storage', 'all', '--nbd', `127.0.0.1:${r.nbdPort}`, '--verify-disk', '--launch-when-ready']);
    const { code, result, lines, stderr } = await m.done;
    t.diagnostic(`result: ${JSON.stringify(result)}`);
    assert.equal(result.outcome, 'done', stderr);
    assert.equal(code, 0);
    assert.ok(lines.some((l) => l.event === 'disk-mirror-started'), 'mirror started');
    const ready = lines.findIndex((l) => l.event === 'disk-mirror-ready');
    const launched = lines.findIndex((l) => l.event === 'phase' && l.phase === 'launched');
    assert.ok(ready >= 0 && launched > ready, `launched (line ${launched}) only after the mirror was ready (line ${ready})`);
    const q = result.qemu as Record<string, number | boolean | null>;
    assert.equal(typeof q.diskCompleteMs, 'number');
    assert.ok((q.diskBytes as number) > 0, `disk bytes ${q.diskBytes}`);
    assert.equal(typeof q.diskVerifyMs, 'number');
    assert.equal(q.diskVerified, true);
    assert.deepEqual(compared, { equal: true, bytes: DISK_BYTES }, 'target disk == source disk, both guests stopped');
    assert.ok(r.events.some((e) => e.event === 'disk-verified'), 'the target compared the digests');
    // The guest goes on from the target's disk: its next read-back is of a record the source wrote.
    await r.src.exited;
    const lastSrc = Math.max(...diskLines(r.src.serial).seqs);
    const dst = new SerialLog(r.dstSerial);
    closers.push(() => dst.close());
    await waitDiskPast(dst, lastSrc + 20);
    assert.deepEqual(diskLines(dst).bad, []);
    assert.deepEqual(diskLines(r.src.serial).bad, []);
  });

  it('non-shared disk, --verify-disk: a target disk that differs at HANDOVER is refused; rolled back, the source re-activates its disk and writes on', async () => {
    const r = await rig('bad', {
      shared: false,
      // After the mirror completed (the source is paused), before the target hashes: one byte of its copy changes behind QEMU's back.
      atVerifyPhase: (dst) => {
        const fd = openSync(dst, 'r+');
        writeSync(fd, Buffer.from([0xa5]), 0, 1, 8 << 20);
        closeSync(fd);
      },
    });
    const { code, result, stderr } = await migrate(ends(r), ['--copy-storage', 'all', '--nbd', `127.0.0.1:${r.nbdPort}`, '--verify-disk', '--launch-when-ready']).done;
    assert.equal(result.outcome, 'rolled-back', stderr);
    assert.equal(code, 3);
    assert.match((result.error as { message: string }).message, /PRESYNC_ERR_DISK_VERIFY: the target's disks differ from the source's: disk0: contents differ/);
    assert.equal(r.events.some((e) => e.event === 'qemu-running'), false, 'the target never ran the guest');
    await assertSourceRunsOn(r);
  });

  it('shared disk: both QEMUs open the same image; the guest goes on writing it from the target', async (t) => {
    const r = await rig('shared', { shared: true });
    const { code, result, stderr } = await migrate(ends(r), ['--launch-after', '3s']).done;
    t.diagnostic(`result: ${JSON.stringify(result)}`);
    assert.equal(result.outcome, 'done', stderr);
    assert.equal(code, 0);
    await r.src.exited;
    const lastSrc = Math.max(...diskLines(r.src.serial).seqs);
    const dst = new SerialLog(r.dstSerial);
    closers.push(() => dst.close());
    await waitDiskPast(dst, lastSrc + 20);
    assert.deepEqual(diskLines(dst).bad, []);
    assert.deepEqual(diskLines(r.src.serial).bad, []);
  });

  it('shared disk: the target refuses at HANDOVER after QEMU inactivated the source image; the source re-activates it and writes on', async () => {
    const r = await rig('shared-rb', {
      shared: true,
      hook: () => ({
        start: async () => {
          throw new Error('refused by the test');
        },
      }),
    });
    const { code, result, stderr } = await migrate(ends(r), ['--launch-after', '3s']).done;
    assert.equal(result.outcome, 'rolled-back', stderr);
    assert.equal(code, 3);
    await assertSourceRunsOn(r);
  });

  it('non-shared disk: the target QEMU (its NBD server) dies mid-mirror; rolled back with PRESYNC_ERR_DISK_MIRROR, the source runs on its intact disk', async () => {
    const r = await rig('mid', { shared: false });
    const m = migrate(ends(r), ['--copy-storage', 'disk0', '--nbd', `127.0.0.1:${r.nbdPort}`, '--launch-after', '60s']);
    // Once the mirror runs, the target QEMU goes away.
    for (let i = 0; i < 200 && (await r.src.qmp.execute('query-block-jobs')).length === 0; i++) await new Promise((res) => setTimeout(res, 50));
    await r.target.vm!.kill();
    const { code, result, stderr } = await m.done;
    assert.equal(result.outcome, 'rolled-back', stderr);
    assert.equal((result.error as { code: string }).code, 'PRESYNC_ERR_DISK_MIRROR', JSON.stringify(result.error));
    assert.equal(code, 3);
    await assertSourceRunsOn(r);
  });

  it('non-shared disk: the target QEMU dies at pre-switchover; rolled back, mirror cancelled, the source runs on its intact disk', async () => {
    const r = await rig('pre', { shared: false });
    const first = r.target.vm!;
    const off = r.src.qmp.onEvent((ev) => {
      if (ev.event === 'MIGRATION' && ev.data.status === 'pre-switchover') void first.kill();
    });
    const { code, result, stderr } = await migrate(ends(r), ['--copy-storage', 'all', '--nbd', `127.0.0.1:${r.nbdPort}`, '--launch-when-ready']).done;
    off();
    assert.equal(result.outcome, 'rolled-back', stderr);
    assert.equal(code, 3);
    await assertSourceRunsOn(r);
  });
});
