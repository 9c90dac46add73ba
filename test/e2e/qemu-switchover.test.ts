import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import {
  continueSwitchover,
  prepareSource,
  prepareTarget,
  rollbackSource,
  startMigrate,
  waitMigrationCompleted,
  waitPreSwitchover,
  waitTargetRunning,
} from '../../src/qemu/switchover.ts';
import { attachVm } from '../../src/qemu/vm.ts';
import { failures, heartbeats, Lab, qemuMissing, waitHealthy } from './qemu-fixture.ts';

const PAGE = 4096;

/**
 * Stand-in for presync's final round: copies the source RAM file into the
 * target's, page by page, in place (the target QEMU has it mapped, so it must
 * not be replaced or truncated). Returns the number of pages that differed.
 */
async function copyRamInPlace(srcPath: string, dstPath: string): Promise<number> {
  const src = await open(srcPath, 'r');
  const dst = await open(dstPath, 'r+');
  try {
    const { size } = await src.stat();
    assert.equal((await dst.stat()).size, size, 'both RAM files have the guest RAM size');
    const chunk = 256 * PAGE;
    const a = Buffer.alloc(chunk);
    const b = Buffer.alloc(chunk);
    let differing = 0;
    for (let off = 0; off < size; off += chunk) {
      const n = (await src.read(a, 0, Math.min(chunk, size - off), off)).bytesRead;
      await dst.read(b, 0, n, off);
      for (let p = 0; p < n; p += PAGE) {
        if (a.compare(b, p, p + PAGE, p, p + PAGE) !== 0) {
          await dst.write(a, p, PAGE, off + p);
          differing++;
        }
      }
    }
    return differing;
  } finally {
    await src.close();
    await dst.close();
  }
}

describe('x-ignore-shared switchover on real QEMU', { skip: qemuMissing }, () => {
  const lab = new Lab();
  after(() => lab.cleanup());

  it('moves only device state through QEMU once the RAM file is copied; the guest continues on the target', async (t) => {
    const spec = lab.spec({ name: 'xs-src', memMiB: 128, guestMem: '32M', workload: 'audio' });
    // A second QMP socket: one client per socket, and launchVm holds the first.
    const attachSock = `${lab.paths('xs-src').qmpSocket}2`;
    const src = await lab.launch(spec, 'xs-src', { extraArgs: ['-qmp', `unix:${attachSock},server=on,wait=off`] });
    await waitHealthy(src);

    // The engine attaches to VMs it did not start; this one must qualify.
    const att = await attachVm(attachSock);
    assert.equal(att.memPath, lab.paths('xs-src').memPath);
    assert.equal(att.memBytes, spec.memBytes);
    assert.equal(att.machine, 'pc-i440fx-7.2');
    assert.match(att.append, /presync\.workload=audio/);
    att.qmp.close();

    const dst = await lab.launchTarget(spec, 'xs-dst');
    const { uri } = await prepareTarget(dst.qmp);
    assert.match(uri, /^tcp:127\.0\.0\.1:[1-9]\d*$/);
    await prepareSource(src.qmp);
    await startMigrate(src.qmp, uri);
    await waitPreSwitchover(src.qmp);
    assert.equal((await src.qmp.execute('query-status')).running, false, 'source vCPUs are stopped at pre-switchover');
    await src.serial.flush();
    const lastSrc = Math.max(...heartbeats(src.serial));

    const copied = await copyRamInPlace(lab.paths('xs-src').memPath, lab.paths('xs-dst').memPath);
    assert.ok(copied > 8192, `the target's RAM file started out different (${copied} pages copied)`);

    await continueSwitchover(src.qmp);
    const done = await waitMigrationCompleted(src.qmp);
    await waitTargetRunning(dst.qmp);
    t.diagnostic(`x-ignore-shared: transferred=${done.ram?.transferred} downtime=${done.downtimeMs}ms total=${done.totalTimeMs}ms`);
    // Only device state and the small unshared blocks (ROMs): far below the 32 MiB the guest wrote.
    assert.ok((done.ram?.transferred ?? Infinity) < 4 << 20, `QEMU's stream carried ${done.ram?.transferred} B`);

    const ok = await dst.serial.waitForLine(/^OK (\d+)/, 30_000);
    assert.ok(Number(ok.match[1]) > lastSrc, `target OK ${ok.match[1]} continues past the source's ${lastSrc}`);
    assert.ok(heartbeats(dst.serial)[0] >= lastSrc);
    // Two more OKs: at least one full pass over the buffer on the target.
    await dst.serial.waitForLine(/^OK/, 30_000, dst.serial.nextIndex);
    await dst.serial.waitForLine(/^OK/, 30_000, dst.serial.nextIndex);
    assert.deepEqual(failures(dst.serial), []);
    assert.deepEqual(failures(src.serial), []);
  });

  it('rolls back when the target dies at pre-switchover: the source resumes and its heartbeats continue', async () => {
    const spec = lab.spec({ name: 'rb-src', memMiB: 128, guestMem: '32M', workload: 'text' });
    const src = await lab.launch(spec, 'rb-src');
    await waitHealthy(src);
    const dst = await lab.launchTarget(spec, 'rb-dst');
    const { uri } = await prepareTarget(dst.qmp);
    await prepareSource(src.qmp);
    await startMigrate(src.qmp, uri);
    await waitPreSwitchover(src.qmp);
    assert.equal((await src.qmp.execute('query-status')).running, false);

    await dst.kill();
    await rollbackSource(src.qmp);
    assert.equal((await src.qmp.execute('query-status')).running, true);
    const info = await src.qmp.execute('query-migrate');
    assert.ok(info.status === 'cancelled' || info.status === 'failed', `migration ended as ${info.status}`);

    await src.serial.flush();
    const mark = src.serial.nextIndex;
    const last = Math.max(...heartbeats(src.serial));
    const ok = await src.serial.waitForLine(/^OK (\d+)/, 30_000, mark);
    assert.ok(Number(ok.match[1]) > last);
    assert.ok(heartbeats(src.serial, mark).every((v) => v > last), 'heartbeats continue after rollback');
    assert.deepEqual(failures(src.serial), []);
    // Rollback is idempotent: nothing to cancel, the guest already runs.
    await rollbackSource(src.qmp);
  });

  it('the workload catches a corrupted page (the continuity check can fail)', async () => {
    const spec = lab.spec({ name: 'bad-src', memMiB: 128, guestMem: '16M', workload: 'idle' });
    const vm = await lab.launch(spec, 'bad-src');
    await waitHealthy(vm);
    // Find workload pages by their header magic and flip a body byte in a few of them.
    const fh = await open(lab.paths('bad-src').memPath, 'r+');
    const buf = Buffer.alloc(PAGE);
    let hit = 0;
    const { size } = await fh.stat();
    for (let off = 0; off < size && hit < 64; off += PAGE) {
      await fh.read(buf, 0, 24, off);
      if (buf.readBigUInt64LE(0) === 0x7072657379n && buf.readBigUInt64LE(8) > 16n) {
        await fh.read(buf, 0, PAGE, off);
        buf[2000] ^= 0xff;
        await fh.write(buf, 2000, 1, off + 2000);
        hit++;
      }
    }
    await fh.close();
    assert.ok(hit > 0, 'workload pages found in the RAM file');
    const fail = await vm.serial.waitForLine(/^FAIL (\w+)/, 30_000);
    assert.equal(fail.match[1], 'body');
    // After a failure the workload never says OK again.
    const mark = vm.serial.nextIndex;
    await vm.serial.waitForLine(/^HB/, 10_000, mark + 12);
    assert.deepEqual(vm.serial.matching(/^OK/, fail.index), []);
  });

  it('attachVm refuses a VM whose RAM is not a shared file', async () => {
    const spec = lab.spec({ name: 'anon', memMiB: 128, ram: 'anonymous' });
    await lab.launch(spec, 'anon', { extraArgs: ['-qmp', `unix:${lab.paths('anon').qmpSocket}2,server=on,wait=off`] });
    await assert.rejects(attachVm(`${lab.paths('anon').qmpSocket}2`), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'PRESYNC_ERR_QEMU');
      assert.match(e.message, /not a memory-backend-file/);
      assert.match(e.message, /share=on/);
      return true;
    });
    const unshared = { ...lab.spec({ name: 'unshared', memMiB: 128 }), ram: { kind: 'file' as const, memPath: lab.paths('unshared').memPath, share: false } };
    await lab.launch(unshared, 'unshared', { extraArgs: ['-qmp', `unix:${lab.paths('unshared').qmpSocket}2,server=on,wait=off`] });
    await assert.rejects(attachVm(`${lab.paths('unshared').qmpSocket}2`), /is not shared/);
  });
});
