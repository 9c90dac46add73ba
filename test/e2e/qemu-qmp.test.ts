import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { QmpCommandError } from '../../src/qemu/qmp.ts';
import { launchVm } from '../../src/qemu/vm.ts';
import { Lab, qemuMissing } from './qemu-fixture.ts';

describe('QmpClient and launchVm against real QEMU', { skip: qemuMissing }, () => {
  const lab = new Lab();
  after(() => lab.cleanup());

  it('talks QMP to a waiting target: greeting, typed replies, error classes, the 7.2 capability names', async () => {
    const spec = lab.spec({ name: 'q1' });
    const vm = await lab.launch(spec, 'q1', { incoming: 'defer' });
    assert.ok((vm.qmp.greeting?.version.major ?? 0) >= 7);
    assert.deepEqual(await vm.qmp.execute('query-status'), { running: false, status: 'inmigrate' });

    const caps = (await vm.qmp.execute('query-migrate-capabilities')).map((c) => c.capability);
    for (const name of ['x-ignore-shared', 'pause-before-switchover', 'events', 'multifd'] as const) assert.ok(caps.includes(name), name);

    await assert.rejects(vm.qmp.execute('no-such-command'), (e: unknown) => {
      assert.ok(e instanceof QmpCommandError);
      assert.equal(e.code, ErrorCodes.QMP);
      assert.equal(e.qmpClass, 'CommandNotFound');
      return true;
    });
    await assert.rejects(vm.qmp.execute('qom-get', { path: '/machine', property: 'no-such-property' }), (e: unknown) => e instanceof QmpCommandError && e.qmpClass === 'GenericError');
    const mem = await vm.qmp.execute('query-memdev');
    assert.deepEqual(
      mem.map((m) => [m.id, m.size, m.share]),
      [['ram0', spec.memBytes, true]],
    );
  });

  it('rejects waits and later commands with PRESYNC_ERR_QEMU when QEMU dies, and resolves exited', async () => {
    const vm = await lab.launch(lab.spec({ name: 'q2' }), 'q2', { incoming: 'defer' });
    const waiting = vm.qmp.waitForEvent('RESUME', undefined, 30_000).then(
      () => undefined,
      (e: unknown) => e,
    );
    const ex = await vm.kill();
    assert.equal(ex.signal, 'SIGKILL');
    const err = await waiting;
    assert.ok(err instanceof PresyncError && err.code === ErrorCodes.QEMU, String(err));
    await assert.rejects(vm.qmp.execute('query-status'), (e: unknown) => e instanceof PresyncError && e.code === ErrorCodes.QEMU);
  });

  it('quit() ends QEMU cleanly and reports SHUTDOWN', async () => {
    const vm = await lab.launch(lab.spec({ name: 'q3' }), 'q3', { incoming: 'defer' });
    const shutdown = vm.qmp.waitForEvent('SHUTDOWN', undefined, 10_000);
    await vm.qmp.quit();
    assert.equal((await shutdown).data.reason, 'host-qmp-quit');
    assert.equal((await vm.exited).code, 0);
    assert.equal(vm.qmp.isClosed, true);
  });

  it('launchVm reports a QEMU that exits at startup with its stderr', async () => {
    const spec = lab.spec({ name: 'q4' });
    const p = lab.paths('q4');
    await assert.rejects(launchVm({ ...spec, kernel: '/nonexistent/vmlinuz', qmpSocket: p.qmpSocket, serialLog: p.serialLog }), (e: unknown) => {
      assert.ok(e instanceof PresyncError);
      assert.equal(e.code, ErrorCodes.QEMU);
      assert.match(e.message, /exited during startup.*nonexistent/s);
      return true;
    });
    await assert.rejects(launchVm({ ...spec, qemuBinary: '/nonexistent/qemu', qmpSocket: p.qmpSocket, serialLog: p.serialLog }), /cannot start/);
  });
});
