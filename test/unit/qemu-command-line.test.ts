import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { analyzeTargetCommandLine, parseKeyValues, parseQemuArgv, parseQemuSize, presyncTargetArgs } from '../../src/qemu/command-line.ts';
import { buildQemuArgs, machineArgs } from '../../src/qemu/vm.ts';

const Q = 'qemu-system-x86_64';
const FILE_RAM = ['-object', 'memory-backend-file,id=ram0,size=1G,mem-path=/dev/shm/vm.ram,share=on', '-machine', 'pc-i440fx-7.2,memory-backend=ram0'];

/** The one-line refusal for `argv`, checked to be PRESYNC_ERR_QEMU_CMDLINE. */
function refusal(argv: string[]): string {
  try {
    analyzeTargetCommandLine(argv);
  } catch (e) {
    assert.ok(e instanceof PresyncError, String(e));
    assert.equal(e.code, ErrorCodes.QEMU_CMDLINE);
    assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
    return e.message;
  }
  assert.fail(`accepted: ${argv.join(' ')}`);
}

describe('parseQemuArgv', () => {
  it('reads -opt value, --opt value, flags without a value, and positionals', () => {
    const p = parseQemuArgv([Q, '-m', '1G', '--machine', 'q35', '-S', '-nodefaults', 'disk.img', '-snapshot', '--enable-kvm', '-name', 'vm']);
    assert.equal(p.binary, Q);
    assert.deepEqual(p.options, [
      { name: 'm', value: '1G' },
      { name: 'machine', value: 'q35' },
      { name: 'S', value: undefined },
      { name: 'nodefaults', value: undefined },
      { name: 'snapshot', value: undefined },
      { name: 'enable-kvm', value: undefined },
      { name: 'name', value: 'vm' },
    ]);
    assert.deepEqual(p.positionals, ['disk.img']);
  });

  it('takes a value that starts with a dash as the value (QEMU does)', () => {
    assert.deepEqual(parseQemuArgv([Q, '-append', '-v quiet']).options, [{ name: 'append', value: '-v quiet' }]);
  });

  it('refuses an option missing its value, and a command line without the binary', () => {
    assert.match(refusal([Q, ...FILE_RAM, '-kernel']), /QEMU option -kernel needs a value/);
    assert.match(refusal([]), /no QEMU command after "--"/);
    assert.match(refusal(['-m', '1G']), /must start with the QEMU binary/);
  });
});

describe('parseKeyValues', () => {
  it('splits on commas, ",," is a literal comma, the first bare item is the implied key, later bare keys are on', () => {
    const kv = parseKeyValues('memory-backend-file,id=r,mem-path=/a,,b,,,c=d,share', 'qom-type');
    assert.deepEqual([...kv], [['qom-type', 'memory-backend-file'], ['id', 'r'], ['mem-path', '/a,b,'], ['c', 'd'], ['share', 'on']]);
    assert.deepEqual([...parseKeyValues('type=q35,memory-backend=m', 'type')], [['type', 'q35'], ['memory-backend', 'm']]);
  });
});

describe('parseQemuSize', () => {
  it('reads QEMU sizes: suffixes, fractions, and the option\'s default unit', () => {
    assert.equal(parseQemuSize('1G'), 2 ** 30);
    assert.equal(parseQemuSize('1.5g'), 1.5 * 2 ** 30);
    assert.equal(parseQemuSize('4096'), 4096);
    assert.equal(parseQemuSize('512', 'M'), 512 * 2 ** 20);
    assert.equal(parseQemuSize('256M', 'M'), 256 * 2 ** 20);
    assert.equal(parseQemuSize('1GiB'), null);
    assert.equal(parseQemuSize('lots'), null);
  });
});

describe('analyzeTargetCommandLine', () => {
  it('finds the shared file backend of -machine memory-backend=, its size and mem-path, and keeps the args untouched', () => {
    const argv = [Q, '-accel', 'tcg', ...FILE_RAM, '-m', '1G', '-device', 'virtio-net-pci,netdev=n0', '-netdev', 'tap,id=n0,ifname=tap0', '-serial', 'file:/var/log/vm.serial', '-qmp', 'unix:/run/vm.qmp,server=on,wait=off'];
    const cl = analyzeTargetCommandLine(argv);
    assert.deepEqual(cl.backends, [{ id: 'ram0', qomType: 'memory-backend-file', size: 2 ** 30, memPath: '/dev/shm/vm.ram', share: true }]);
    assert.equal(cl.memBytes, 2 ** 30);
    assert.equal(cl.machine, 'pc-i440fx-7.2');
    assert.equal(cl.serialFile, '/var/log/vm.serial');
    assert.equal(cl.startPaused, false);
    assert.deepEqual(cl.args, argv.slice(1));
  });

  it('reads a mem-path with an escaped comma, share=true/yes, --object, -M, and the JSON form of -object', () => {
    const a = analyzeTargetCommandLine([Q, '--object', 'memory-backend-file,id=m,size=256M,mem-path=/dev/shm/a,,b.ram,share=yes', '-M', 'q35', '-M', 'memory-backend=m']);
    assert.equal(a.backends[0].memPath, '/dev/shm/a,b.ram');
    assert.equal(a.machine, 'q35');
    const j = analyzeTargetCommandLine([Q, '-object', JSON.stringify({ 'qom-type': 'memory-backend-file', id: 'ram0', size: 268435456, 'mem-path': '/dev/shm/j.ram', share: true }), '-machine', 'memory-backend=ram0']);
    assert.deepEqual(j.backends[0], { id: 'ram0', qomType: 'memory-backend-file', size: 268435456, memPath: '/dev/shm/j.ram', share: true });
  });

  it('lists every RAM backend: NUMA nodes\' memdevs in order, then backends only a DIMM uses', () => {
    const cl = analyzeTargetCommandLine([
      Q, '-m', '2G,slots=2,maxmem=4G',
      '-object', 'memory-backend-file,id=n1,size=1G,mem-path=/dev/shm/n1,share=on',
      '-object', 'memory-backend-file,id=n0,size=1G,mem-path=/dev/shm/n0,share=on',
      '-object', 'memory-backend-file,id=d0,size=512M,mem-path=/dev/shm/d0,share=on',
      '-numa', 'node,nodeid=0,memdev=n0', '-numa', 'node,nodeid=1,memdev=n1', '-device', 'pc-dimm,memdev=d0',
    ]);
    assert.deepEqual(cl.backends.map((b) => b.id), ['n0', 'n1', 'd0']);
    assert.equal(cl.memBytes, 2.5 * 2 ** 30);
  });

  it('notes a -S already there', () => {
    assert.equal(analyzeTargetCommandLine([Q, ...FILE_RAM, '-S']).startPaused, true);
  });

  it('refuses anonymous RAM, naming the backend to add with the -m size', () => {
    assert.equal(
      refusal([Q, '-m', '2G', '-machine', 'q35']),
      'the guest\'s RAM is anonymous (-m 2G without a memory backend), so presync cannot reach it; add -object memory-backend-file,id=ram0,size=2G,mem-path=/dev/shm/NAME.ram,share=on -machine memory-backend=ram0',
    );
    assert.match(refusal([Q, '-machine', 'q35']), /anonymous \(no -m without a memory backend\).*size=128M/);
    assert.match(refusal([Q, '-m', '1G', '-numa', 'node,mem=1G']), /-numa node has no memdev, so its RAM is anonymous/);
    assert.match(refusal([Q, '-m', '1G', '-mem-path', '/dev/hugepages']), /^-mem-path maps the guest's RAM privately.*memory-backend-file,id=ram0,size=1G/);
  });

  it('refuses memory-backend-ram and memory-backend-memfd anywhere, even one only a DIMM uses', () => {
    assert.match(refusal([Q, '-object', 'memory-backend-ram,id=ram0,size=1G', '-machine', 'memory-backend=ram0']), /^RAM backend ram0 is memory-backend-ram, anonymous memory presync cannot reach; make it -object memory-backend-file,id=ram0,size=1G,mem-path=\/dev\/shm\/NAME\.ram,share=on$/);
    assert.match(refusal([Q, '-object', 'memory-backend-memfd,id=ram0,size=1G,share=on', '-machine', 'memory-backend=ram0']), /memory-backend-memfd, which has no path presync can open; make it -object memory-backend-file,id=ram0/);
    assert.match(refusal([Q, ...FILE_RAM, '-object', 'memory-backend-ram,id=d0,size=512M', '-device', 'pc-dimm,memdev=d0']), /RAM backend d0 is memory-backend-ram/);
  });

  it('refuses a file backend that is not shared (share=off, or missing: QEMU\'s default), saying to add share=on', () => {
    const msg = 'RAM backend ram0 (/dev/shm/vm.ram) is not shared (share=off is QEMU\'s default), so the guest\'s writes never reach the file; add share=on to -object memory-backend-file,id=ram0';
    assert.equal(refusal([Q, '-object', 'memory-backend-file,id=ram0,size=1G,mem-path=/dev/shm/vm.ram', '-machine', 'memory-backend=ram0']), msg);
    assert.equal(refusal([Q, '-object', 'memory-backend-file,id=ram0,size=1G,mem-path=/dev/shm/vm.ram,share=off', '-machine', 'memory-backend=ram0']), msg);
  });

  it('refuses a backend without mem-path or size, a memory-backend= naming no object, two backends on one file, and -m that disagrees', () => {
    assert.match(refusal([Q, '-object', 'memory-backend-file,id=ram0,size=1G,share=on', '-machine', 'memory-backend=ram0']), /has no mem-path; add mem-path=/);
    assert.match(refusal([Q, '-object', 'memory-backend-file,id=ram0,mem-path=/dev/shm/x,share=on', '-machine', 'memory-backend=ram0']), /has no size; add size=/);
    assert.match(refusal([Q, '-machine', 'pc,memory-backend=mem']), /^-machine memory-backend=mem names no -object with id=mem/);
    assert.match(
      refusal([Q, '-m', '2G', '-object', 'memory-backend-file,id=a,size=1G,mem-path=/dev/shm/x,share=on', '-object', 'memory-backend-file,id=b,size=1G,mem-path=/dev/shm/x,share=on', '-numa', 'node,memdev=a', '-numa', 'node,memdev=b']),
      /RAM backends a and b share mem-path \/dev\/shm\/x/,
    );
    assert.match(refusal([Q, ...FILE_RAM, '-m', '512M']), /^-m 512M does not match the RAM backend \(ram0: 1G\); make them equal$/);
  });

  it('refuses options that conflict with presync starting the target: -incoming, -daemonize, -preconfig, -loadvm, -readconfig', () => {
    assert.match(refusal([Q, ...FILE_RAM, '-incoming', 'tcp:0:4444']), /^remove -incoming: presync starts the target QEMU with -incoming defer itself/);
    assert.match(refusal([Q, ...FILE_RAM, '--incoming', 'defer']), /^remove -incoming/);
    assert.match(refusal([Q, ...FILE_RAM, '-daemonize']), /^remove -daemonize/);
    assert.match(refusal([Q, ...FILE_RAM, '-preconfig']), /^remove -preconfig/);
    assert.match(refusal([Q, ...FILE_RAM, '-loadvm', 'snap']), /^remove -loadvm/);
    assert.match(refusal([Q, ...FILE_RAM, '-readconfig', 'vm.cfg']), /-readconfig on the command line: presync must see every RAM backend/);
  });
});

describe('presync\'s additions', () => {
  it('are its QMP socket, -incoming defer and -S, the latter not twice', () => {
    assert.deepEqual(presyncTargetArgs({ qmpSocket: '/run/a,b.qmp', incoming: 'defer', addS: true }), ['-qmp', 'unix:/run/a,,b.qmp,server=on,wait=off', '-incoming', 'defer', '-S']);
    const user = [Q, ...FILE_RAM, '-S', '-qmp', 'unix:/run/mine.qmp,server=on,wait=off'];
    const args = buildQemuArgs({ memBytes: 2 ** 30, ram: { kind: 'file', memPath: '/dev/shm/vm.ram' }, kernel: '', qmpSocket: '/run/p.qmp', serialLog: '/x', commandLine: user, incoming: 'defer', startPaused: true });
    assert.deepEqual(args, [...user.slice(1), '-qmp', 'unix:/run/p.qmp,server=on,wait=off', '-incoming', 'defer']);
  });

  it('the command line presync builds from --kernel flags passes the same analysis', () => {
    const argv = [Q, ...machineArgs({ memBytes: 256 << 20, ram: { kind: 'file', memPath: '/dev/shm/t.ram', share: true }, kernel: '/k', machine: 'pc-i440fx-7.2', serialLog: '/tmp/s' })];
    const cl = analyzeTargetCommandLine(argv);
    assert.deepEqual(cl.backends.map((b) => [b.id, b.memPath, b.size, b.share]), [['ram0', '/dev/shm/t.ram', 256 << 20, true]]);
    assert.equal(cl.serialFile, '/tmp/s');
  });
});
