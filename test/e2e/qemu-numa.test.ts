/**
 * A real QEMU test guest with two NUMA nodes, each a memory-backend-file:
 * `presync qemu migrate` syncs both files in one migration (one presync, one
 * pause, one verify of both), the target is `presync qemu serve --
 * qemu-system-x86_64 …` with the same backend ids, and the guest goes on on
 * the target. And a VM with one anonymous NUMA node: refused with one line,
 * nothing started on the target.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CLI } from '../../src/lab/cli-entry.ts';
import { QmpClient } from '../../src/qemu/qmp.ts';
import { SerialLog } from '../../src/qemu/serial.ts';
import { launchVm } from '../../src/qemu/vm.ts';
import { buildGuest, failures, heartbeats, Lab, qemuMissing, waitHealthy } from './qemu-fixture.ts';
import { exitOf, jsonLines } from '../helpers/json-lines.ts';

const SECRET = 'qemu-numa-e2e-secret-0123456789abcdef';
const PAGE = 4096;
const NODE_MIB = 64;

/** A two-node machine: node 0 (the CPU) in m0, node 1 (memory only) in m1, each a shared file unless `m1` says otherwise. */
function numaArgs(o: { m0: string; m1: string; serial: string; m1Object?: string }): string[] {
  const g = buildGuest();
  return [
    'qemu-system-x86_64',
    '-accel', 'tcg',
    '-machine', 'pc-i440fx-7.2',
    '-m', `${2 * NODE_MIB}M`,
    '-object', `memory-backend-file,id=m0,size=${NODE_MIB}M,mem-path=${o.m0},share=on`,
    '-object', o.m1Object ?? `memory-backend-file,id=m1,size=${NODE_MIB}M,mem-path=${o.m1},share=on`,
    '-numa', 'node,nodeid=0,cpus=0,memdev=m0',
    '-numa', 'node,nodeid=1,memdev=m1',
    '-smp', '1',
    '-nodefaults', '-vga', 'none', '-display', 'none', '-no-user-config',
    '-serial', `file:${o.serial}`,
    '-kernel', g.kernel,
    '-initrd', g.initrd,
    '-append', 'console=ttyS0 quiet panic=-1 presync.mem=32M presync.workload=text',
  ];
}



/** Non-zero pages of `a`, and how many of them `b` holds identically. */
function sameNonZero(a: Buffer, b: Buffer): { nonZero: number; same: number } {
  const zero = Buffer.alloc(PAGE);
  let nonZero = 0;
  let same = 0;
  for (let off = 0; off < a.length; off += PAGE) {
    const p = a.subarray(off, off + PAGE);
    if (p.equals(zero)) continue;
    nonZero++;
    if (p.equals(b.subarray(off, off + PAGE))) same++;
  }
  return { nonZero, same };
}

describe('two NUMA nodes, each a memory-backend-file', { skip: qemuMissing, timeout: 400_000 }, () => {
  const lab = new Lab();
  const children: ChildProcess[] = [];
  /** Target QEMUs serve started: a serve killed by a failed test would leave them behind. */
  const targetPids: number[] = [];
  const step = (what: string) => console.log(`# ${new Date().toISOString()} ${what}`);
  const secret = join(lab.dir, 'secret');
  writeFileSync(secret, `${SECRET}\n`);
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const pid of targetPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await lab.cleanup();
  });

  async function serveTarget(name: string): Promise<{ serve: ChildProcess; out: ReturnType<typeof jsonLines>; m0: string; m1: string; serial: string; qmp: string; listening: Record<string, unknown> }> {
    const m0 = join(lab.shm, `${name}-m0.ram`);
    const m1 = join(lab.shm, `${name}-m1.ram`);
    const serial = join(lab.dir, `${name}.serial`);
    const qmp = join(lab.dir, `${name}-test.qmp`);
    // The user's command line, with a QMP socket of the test's own (to stop the target after the run).
    const command = [...numaArgs({ m0, m1, serial }), '-qmp', `unix:${qmp},server=on,wait=off`];
    const serve = spawn(process.execPath, [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--qemu-listen', '127.0.0.1:0', '--json', '--', ...command], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(serve);
    const out = jsonLines(serve, 120_000);
    const listening = await out.next((l) => l.event === 'listening');
    if (typeof listening.pid === 'number') targetPids.push(listening.pid);
    return { serve, out, m0, m1, serial, qmp, listening };
  }

  it('qemu migrate syncs both nodes\' files in one migration; the guest goes on on the target', async () => {
    const src = await launchVm({
      memBytes: 2 * NODE_MIB << 20,
      ram: { kind: 'file', memPath: join(lab.shm, 'src-m0.ram') },
      kernel: '',
      ...lab.paths('numa-src'),
      commandLine: [...numaArgs({ m0: join(lab.shm, 'src-m0.ram'), m1: join(lab.shm, 'src-m1.ram'), serial: lab.paths('numa-src').serialLog }), '-qmp', `unix:${lab.paths('numa-src').qmpSocket}-presync,server=on,wait=off`],
    });
    lab.vms.push(src);
    await waitHealthy(src);
    step('source healthy');
    const t = await serveTarget('numa-dst');
    step('target listening');
    const migrate = spawn(
      process.execPath,
      [CLI, 'qemu', 'migrate', '--qmp', `${lab.paths('numa-src').qmpSocket}-presync`, '--to', `127.0.0.1:${t.listening.port}`, '--qemu-uri', String(t.listening.qemuUri), '--secret-file', secret, '--launch-after', '4s', '--json'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(migrate);
    const mout = jsonLines(migrate, 120_000);
    // A migration that has not ended in 4 minutes says where it stands (instead of the suite's timeout).
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      exitOf(migrate),
      new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`qemu migrate still runs; last lines: ${JSON.stringify(mout.lines.slice(-4))}`)), 240_000))),
    ]).finally(() => clearTimeout(timer));
    step('migrate exited');
    const result = mout.lines[mout.lines.length - 1];
    assert.equal(result.outcome, 'done', JSON.stringify(result).slice(0, 2000));
    assert.equal(code, 0);
    assert.equal(result.verified, true);
    // One migration of both files: one pause, and the presync covered the whole 128 MiB page space.
    assert.equal(mout.lines.filter((l) => l.event === 'paused').length, 1);
    const progress = mout.lines.filter((l) => l.event === 'progress').pop() as { status?: { pageCount?: number } } | undefined;
    if (progress?.status?.pageCount !== undefined) assert.equal(progress.status.pageCount, (2 * NODE_MIB << 20) / PAGE);
    await t.out.next((l) => l.event === 'handed-over');
    const verifies = t.out.lines.filter((l) => l.event === 'verify');
    assert.ok(verifies.length >= 1 && verifies[verifies.length - 1].match === true, 'the target verified the image of both files');
    assert.equal(await exitOf(t.serve), 0);
    step('serve exited');

    // The guest continues on the target.
    await src.serial.flush();
    const lastSrc = Math.max(...heartbeats(src.serial));
    const dst = new SerialLog(t.serial);
    const qmp = await QmpClient.connect(t.qmp, { connectTimeoutMs: 10_000 });
    try {
      const ok = await dst.waitForLine(/^OK (\d+)/, 60_000);
      step('target guest OK');
      assert.ok(Number(ok.match[1]) > lastSrc, `target OK ${ok.match[1]} continues past the source's last heartbeat ${lastSrc}`);
      assert.deepEqual(failures(dst), []);
      assert.deepEqual(failures(src.serial), []);
      // Both files reached the target: the source is stopped at the switchover; the target ran a little since,
      // so compare the pages the source holds data in (node 1 holds at least its own page structures).
      await qmp.execute('stop');
      for (const node of ['m0', 'm1'] as const) {
        const a = readFileSync(join(lab.shm, `src-${node}.ram`));
        const b = readFileSync(node === 'm0' ? t.m0 : t.m1);
        const { nonZero, same } = sameNonZero(a, b);
        console.log(`# ${node}: ${same} of the source's ${nonZero} data pages identical on the target`);
        assert.ok(nonZero > 0, `${node}: the source file holds data`);
        assert.ok(same / nonZero > 0.8, `${node}: ${same} of the source's ${nonZero} data pages are on the target`);
      }
    } finally {
      await qmp.execute('quit').catch(() => undefined);
      qmp.close();
      await dst.close();
    }
  });

  it('a VM with one anonymous NUMA node is refused with one line naming the option; nothing starts on the target', async () => {
    const spec = lab.paths('anon-src');
    const src = await launchVm({
      memBytes: 2 * NODE_MIB << 20,
      ram: { kind: 'file', memPath: join(lab.shm, 'anon-m0.ram') },
      kernel: '',
      ...spec,
      commandLine: [...numaArgs({ m0: join(lab.shm, 'anon-m0.ram'), m1: '', serial: spec.serialLog, m1Object: `memory-backend-ram,id=m1,size=${NODE_MIB}M` }), '-qmp', `unix:${spec.qmpSocket}-presync,server=on,wait=off`],
    });
    lab.vms.push(src);
    const t = await serveTarget('anon-dst');
    const migrate = spawn(process.execPath, [CLI, 'qemu', 'migrate', '--qmp', `${spec.qmpSocket}-presync`, '--to', `127.0.0.1:${t.listening.port}`, '--qemu-uri', String(t.listening.qemuUri), '--secret-file', secret, '--launch-after', '1s'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(migrate);
    let err = '';
    migrate.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await exitOf(migrate);
    assert.equal(code, 1);
    const lines = err.trim().split('\n');
    assert.equal(lines.length, 1, err);
    assert.match(lines[0], /^presync qemu: PRESYNC_ERR_QEMU: the VM's RAM backend m1 is a memory-backend-ram, not a memory-backend-file presync can read; replace it with -object memory-backend-file,id=m1,size=67108864,mem-path=\/dev\/shm\/<file>,share=on$/);
    // The target heard nothing: no session, and its QEMU still waits for a guest.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(t.out.lines.filter((l) => String(l.event).startsWith('session')), []);
    assert.equal((await src.qmp.execute('query-status')).status, 'running', 'the source VM runs on untouched');
    t.serve.kill('SIGTERM');
    assert.equal(await exitOf(t.serve), 0);
  });
});
