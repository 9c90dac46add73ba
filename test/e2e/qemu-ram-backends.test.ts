/**
 * describeVm/attachVm against real QEMU command lines: every RAM backend of
 * the machine is listed (the machine's memory-backend, NUMA nodes' memdevs,
 * a second backend), and any that presync cannot sync (anonymous RAM,
 * share=off, memfd, QEMU's implicit RAM) is refused with one line naming
 * the option to add. QEMU waits with -S and no kernel: nothing boots.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachVm } from '../../src/qemu/vm.ts';
import { qemuMissing } from './qemu-fixture.ts';

const dir = mkdtempSync(join(tmpdir(), 'presync-ram-backends-'));
const shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'presync-ram-backends-'));
const children: ChildProcess[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
  rmSync(dir, { recursive: true, force: true });
  rmSync(shm, { recursive: true, force: true });
});

let n = 0;
/** Starts QEMU (-S, no kernel) with `args` and a QMP socket; returns the socket once QEMU listens on it. */
async function qemu(args: string[]): Promise<string> {
  const qmp = join(dir, `q${n++}.qmp`);
  const c = spawn('qemu-system-x86_64', ['-S', '-nodefaults', '-display', 'none', '-no-user-config', '-machine', 'pc-i440fx-7.2', ...args, '-qmp', `unix:${qmp},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(c);
  let err = '';
  c.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  for (let i = 0; i < 200 && !existsSync(qmp); i++) {
    if (c.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(existsSync(qmp), `QEMU did not start: ${err}`);
  return qmp;
}

const file = (id: string, mib: number, extra = 'share=on') => ['-object', `memory-backend-file,id=${id},size=${mib}M,mem-path=${join(shm, `${id}-${n}.ram`)},${extra}`];

async function refused(args: string[], re: RegExp): Promise<void> {
  const sock = await qemu(args);
  await assert.rejects(attachVm(sock), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'PRESYNC_ERR_QEMU', e.message);
    assert.match(e.message, re);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  });
}

describe('RAM backends of a running QEMU', { skip: qemuMissing }, () => {
  it('two NUMA nodes, each a shared memory-backend-file (no -machine memory-backend): both listed, sizes and paths', async () => {
    const sock = await qemu(['-m', '96M', ...file('m0', 64), ...file('m1', 32), '-numa', 'node,nodeid=0,memdev=m0', '-numa', 'node,nodeid=1,memdev=m1']);
    const vm = await attachVm(sock);
    try {
      assert.deepEqual(vm.backends?.map((b) => [b.id, b.bytes]), [['m0', 64 << 20], ['m1', 32 << 20]]);
      assert.ok(vm.backends?.every((b) => b.memPath.startsWith(shm)));
      assert.equal(vm.memBytes, 96 << 20);
      assert.equal(vm.memPath, vm.backends![0].memPath);
    } finally {
      vm.qmp.close();
    }
  });

  it('the machine memory-backend is listed first, then a second backend', async () => {
    const sock = await qemu(['-m', '64M,slots=2,maxmem=128M', ...file('extra', 32), ...file('ram0', 64), '-machine', 'memory-backend=ram0', '-device', 'pc-dimm,memdev=extra']);
    const vm = await attachVm(sock);
    try {
      assert.deepEqual(vm.backends?.map((b) => b.id), ['ram0', 'extra']);
      assert.equal(vm.backendId, 'ram0');
    } finally {
      vm.qmp.close();
    }
  });

  it('one anonymous NUMA node is refused, naming the backend and the -object to use instead', async () => {
    await refused(['-m', '96M', ...file('m0', 64), '-object', 'memory-backend-ram,id=m1,size=32M', '-numa', 'node,nodeid=0,memdev=m0', '-numa', 'node,nodeid=1,memdev=m1'], /RAM backend m1 is a memory-backend-ram, not a memory-backend-file.*-object memory-backend-file,id=m1,size=33554432,mem-path=.*share=on/);
  });

  it('a file backend with share=off is refused (add share=on)', async () => {
    await refused(['-m', '96M', ...file('m0', 64), ...file('m1', 32, 'share=off'), '-numa', 'node,nodeid=0,memdev=m0', '-numa', 'node,nodeid=1,memdev=m1'], /RAM backend m1 .* is not shared.*share=on/);
  });

  it('memfd RAM is refused', async () => {
    await refused(['-m', '64M', '-object', 'memory-backend-memfd,id=ram0,size=64M,share=on', '-machine', 'memory-backend=ram0'], /RAM backend ram0 is a memory-backend-memfd, not a memory-backend-file/);
  });

  it("QEMU's own RAM (plain -m) is refused, even beside a shared DIMM backend", async () => {
    // QEMU 7.2 makes plain -m an implicit memory-backend-ram (pc.ram), the machine's backend.
    const own = /RAM backend pc\.ram is a memory-backend-ram, not a memory-backend-file presync can read; start QEMU with -object memory-backend-file,id=ram0,size=67108864,mem-path=\/dev\/shm\/<file>,share=on -machine memory-backend=ram0$/;
    await refused(['-m', '64M'], own);
    await refused(['-m', '64M,slots=2,maxmem=128M', ...file('d0', 32), '-device', 'pc-dimm,memdev=d0'], own);
  });
});
