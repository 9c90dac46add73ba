import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { SerialLog } from '../../src/qemu/serial.ts';
import { buildQemuArgs, matchingTargetOptions, type MachineSpec, type VmDescription } from '../../src/qemu/vm.ts';

const spec: MachineSpec = {
  memBytes: 256 << 20,
  ram: { kind: 'file', memPath: '/dev/shm/a,b.ram' },
  kernel: '/k',
  initrd: '/i',
  append: 'console=ttyS0',
  machine: 'pc-i440fx-7.2',
};
const io = { qmpSocket: '/tmp/x.qmp', serialLog: '/tmp/x.serial' };

function opt(args: string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => a === flag && out.push(args[i + 1]));
  return out;
}

describe('buildQemuArgs', () => {
  it('puts RAM in a shared file backend bound to the machine, TCG by default', () => {
    const args = buildQemuArgs({ ...spec, ...io });
    assert.deepEqual(opt(args, '-accel'), ['tcg']);
    assert.deepEqual(opt(args, '-object'), ['memory-backend-file,id=ram0,size=268435456,mem-path=/dev/shm/a,,b.ram,share=on']);
    assert.deepEqual(opt(args, '-machine'), ['pc-i440fx-7.2,memory-backend=ram0']);
    assert.deepEqual(opt(args, '-m'), ['256M']);
    assert.deepEqual(opt(args, '-serial'), ['file:/tmp/x.serial']);
    assert.deepEqual(opt(args, '-qmp'), ['unix:/tmp/x.qmp,server=on,wait=off']);
    assert.deepEqual(opt(args, '-append'), ['console=ttyS0']);
    assert.deepEqual(opt(args, '-incoming'), []);
    assert.ok(args.includes('-nodefaults'));
  });

  it('honours kvm, anonymous RAM, share=off and -incoming defer', () => {
    const a = buildQemuArgs({ ...spec, ...io, accel: 'kvm', ram: { kind: 'anonymous' }, incoming: 'defer' });
    assert.deepEqual(opt(a, '-accel'), ['kvm']);
    assert.deepEqual(opt(a, '-object'), ['memory-backend-ram,id=ram0,size=268435456']);
    assert.deepEqual(opt(a, '-incoming'), ['defer']);
    const b = buildQemuArgs({ ...spec, ...io, ram: { kind: 'file', memPath: '/r', share: false } });
    assert.match(opt(b, '-object')[0], /share=off$/);
  });

  it('rejects a RAM size that is not whole MiB', () => {
    for (const memBytes of [0, -1, 1000, 1.5 * (1 << 20), Number.NaN]) {
      assert.throws(() => buildQemuArgs({ ...spec, ...io, memBytes }), (e: unknown) => e instanceof PresyncError && e.code === ErrorCodes.BAD_ARGUMENT);
    }
  });
});

describe('matchingTargetOptions', () => {
  it('copies the machine from a launch spec and gives the target its own RAM file and -incoming defer', () => {
    const t = matchingTargetOptions(spec, { memPath: '/dev/shm/t.ram', ...io });
    assert.deepEqual(t.ram, { kind: 'file', memPath: '/dev/shm/t.ram', share: true });
    assert.equal(t.incoming, 'defer');
    assert.equal(t.machine, 'pc-i440fx-7.2');
    assert.equal(t.memBytes, spec.memBytes);
    assert.equal(t.append, spec.append);
  });

  it('builds from a described (attached) VM and refuses a backend id the stream cannot match', () => {
    const desc: VmDescription = { memBytes: 128 << 20, memPath: '/dev/shm/s', backendId: 'ram0', machine: 'pc-q35-7.2', smp: 2, kernel: '/k', initrd: '', append: 'a', accel: 'tcg' };
    const t = matchingTargetOptions(desc, { memPath: '/dev/shm/t', ...io, accel: 'kvm' });
    assert.equal(t.machine, 'pc-q35-7.2');
    assert.equal(t.smp, 2);
    assert.equal(t.initrd, undefined);
    assert.equal(t.accel, 'kvm');
    assert.deepEqual(opt(buildQemuArgs(t), '-smp'), ['2']);
    assert.throws(() => matchingTargetOptions({ ...desc, backendId: 'pc.ram' }, { memPath: '/x', ...io }), /same id/);
  });
});

describe('SerialLog', () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-serial-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('follows a file that appears late and grows in partial lines', async () => {
    const path = join(dir, 'a.log');
    const log = new SerialLog(path, { pollMs: 10 });
    const waiting = log.waitForLine(/^OK (\d+)/, 5000);
    await new Promise((r) => setTimeout(r, 30));
    writeFileSync(path, 'boot\r\nHB 1\nO');
    await new Promise((r) => setTimeout(r, 30));
    appendFileSync(path, 'K 17 5\nHB 2\n');
    const ok = await waiting;
    assert.equal(ok.match[1], '17');
    assert.equal(ok.index, 2);
    assert.deepEqual(
      log.lines().map((l) => l.text),
      ['boot', 'HB 1', 'OK 17 5', 'HB 2'],
    );
    assert.deepEqual(
      log.matching(/^HB (\d+)/, 2).map((m) => m.match[1]),
      ['2'],
    );
    await assert.rejects(log.waitForLine(/^OK/, 50, log.nextIndex), (e: unknown) => e instanceof PresyncError && e.code === ErrorCodes.TIMEOUT && /HB 2/.test(e.message));
    await log.close();
    await assert.rejects(log.waitForLine(/^never/, 1000), (e: unknown) => e instanceof PresyncError && e.code === ErrorCodes.GUEST);
  });

  it('forgets old lines past maxLines but keeps absolute indices', async () => {
    const path = join(dir, 'b.log');
    writeFileSync(path, Array.from({ length: 10 }, (_, i) => `L${i}\n`).join(''));
    const log = new SerialLog(path, { pollMs: 10, maxLines: 4 });
    await log.flush();
    assert.equal(log.nextIndex, 10);
    assert.deepEqual(
      log.lines().map((l) => [l.index, l.text]),
      [[6, 'L6'], [7, 'L7'], [8, 'L8'], [9, 'L9']],
    );
    await log.close();
  });
});
