/**
 * The real VM (test-guest/README.md, "The real VM") in the lab network
 * (src/lab/vm-network.ts): built offline by scripts/build-real-vm.sh, booted
 * from its ext4 root on virtio-blk in the source host's namespace with its
 * virtio-net NIC on that host's bridge; a client in the third namespace talks
 * to its echo service over real TCP, and its disk writer checks its records
 * on the disk.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { BlackoutClient, blackoutClientScript } from '../../src/lab/blackout-client.ts';
import { CLI } from '../../src/lab/cli-entry.ts';
import { netnsUnavailable } from '../../src/lab/netns.ts';
import { buildRealVm, copyRootDisk, diskFailures, diskOks, ECHO_PORT, realVmSpec, rootDiskArgs } from '../../src/lab/real-vm.ts';
import { createVmNetwork, type VmNetwork } from '../../src/lab/vm-network.ts';
import { launchVm, type Vm } from '../../src/qemu/vm.ts';
import { qemuMissing } from './qemu-fixture.ts';

const skip = qemuMissing ?? netnsUnavailable();

describe('real VM: boots from its virtio disk, answers on its virtio NIC, checks its disk', { skip, timeout: 240_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-real-vm-'));
  const shm = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'presync-real-vm-'));
  let net: VmNetwork | undefined;
  let vm: Vm | undefined;
  let client: BlackoutClient | undefined;
  after(async () => {
    client?.kill();
    await vm?.dispose().catch(() => undefined);
    net?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  });

  it('1 GiB guest: echo from the client namespace, disk writer OK, memory workload OK', async (t) => {
    const images = buildRealVm();
    net = createVmNetwork();
    const disk = copyRootDisk(images, join(dir, 'root.img'));
    const spec = realVmSpec({ images, memBytes: 1 << 30, ram: { kind: 'file', memPath: join(shm, 'vm.ram') }, workload: 'text', workloadMem: '64M', cmdline: net.guestCmdline });
    const booted = Date.now();
    vm = await launchVm({
      ...spec,
      qmpSocket: join(dir, 'vm.qmp'),
      serialLog: join(dir, 'vm.serial'),
      commandPrefix: net.exec(net.sourceNs),
      extraArgs: [...rootDiskArgs(disk), ...net.nicArgs('source')],
    });
    await vm.serial.waitForLine(/^ECHO LISTEN 7$/, 120_000);
    const ok = await vm.serial.waitForLine(/^OK \d+/, 120_000);
    t.diagnostic(`boot to the workload's first OK: ${Date.now() - booted} ms`);
    await vm.serial.waitForLine(/^DISK OK/, 30_000, ok.index);
    client = await BlackoutClient.start({ prefix: net.exec(net.clientNs), script: blackoutClientScript(CLI), host: net.guestIp, port: ECHO_PORT });
    await new Promise((r) => setTimeout(r, 2000));
    const report = await client.stop();
    client = undefined;
    t.diagnostic(JSON.stringify(report));
    assert.equal(report.connectionSurvived, true, report.error ?? '');
    assert.ok(report.answered > 50, `answered ${report.answered}`);
    assert.ok(report.answered <= report.sent);
    await vm.serial.flush();
    const oks = diskOks(vm.serial);
    assert.ok(oks.length >= 2, 'two disk checks');
    const last = oks.at(-1)!;
    assert.ok(last.written > 0 && last.verified === last.written, `disk: ${last.written} fsynced, ${last.verified} read back`);
    assert.deepEqual(diskFailures(vm.serial), []);
    assert.ok(vm.serial.matching(/^DISK START records=0 /).length === 1, 'a fresh disk starts empty');
  });
});
