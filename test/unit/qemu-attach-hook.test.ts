/**
 * `--attach-qmp`: when the attached QEMU does not start the guest at the
 * handover, presync (which may not kill it) must see it stopped before it
 * reports the failure: the source resumes its guest on that report. If it
 * cannot tell, the answer must make the source keep its guest paused (in
 * doubt), never resume it. Against a fake QEMU on a real unix socket.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { QemuTarget } from '../../src/qemu/qemu-target.ts';

const dir = mkdtempSync(join(tmpdir(), 'presync-attach-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const IMAGE = '/dev/shm/attached-vm.ram';
const SIZE = 64 << 20;

interface Cmd {
  execute: string;
  id: string;
  arguments?: Record<string, unknown>;
}

/** A QEMU waiting with -incoming defer, as far as presync's checks and switchover ask; `stopWorks` says whether `stop` after a failed `cont` is obeyed. */
async function fakeIncomingQemu(o: { stopWorks: boolean }) {
  const path = join(dir, `q-${Math.random().toString(36).slice(2)}.sock`);
  const log: string[] = [];
  let status = 'inmigrate';
  let listening = false;
  let contTried = false;
  const caps = new Map<string, boolean>();
  const sockets: net.Socket[] = [];
  const answer = (c: Cmd): { ret?: unknown; error?: string } => {
    switch (c.execute) {
      case 'qmp_capabilities':
        return { ret: {} };
      case 'migrate-set-capabilities':
        for (const cap of (c.arguments as { capabilities: Array<{ capability: string; state: boolean }> }).capabilities) caps.set(cap.capability, cap.state);
        return { ret: {} };
      case 'query-status':
        return { ret: { status, running: status === 'running', singlestep: false } };
      case 'query-migrate':
        return { ret: listening ? { 'socket-address': [{ type: 'inet', host: '127.0.0.1', port: '40001' }] } : {} };
      case 'query-migrate-capabilities':
        return { ret: [...caps].map(([capability, state]) => ({ capability, state })) };
      case 'migrate-incoming':
        listening = true;
        return { ret: {} };
      case 'query-memdev':
        return { ret: [{ id: 'ram0', size: SIZE, share: true, prealloc: false, merge: true, dump: true, policy: 'default', 'host-nodes': [] }] };
      case 'query-memory-size-summary':
        return { ret: { 'base-memory': SIZE } };
      case 'query-kvm':
        return { ret: { enabled: false, present: false } };
      case 'qom-get': {
        const { path: p, property } = c.arguments as { path: string; property: string };
        if (p === '/machine' && property === 'memory-backend') return { ret: '/objects/ram0' };
        if (p === '/machine' && property === 'type') return { ret: 'pc-i440fx-7.2-machine' };
        if (p === '/objects/ram0' && property === 'mem-path') return { ret: IMAGE };
        if (p === '/objects/ram0' && property === 'share') return { ret: true };
        return { error: `no property ${property}` };
      }
      case 'stop':
        // In inmigrate, stop turns autostart off; after the failed cont it is the stop that matters.
        if (contTried && !o.stopWorks) return { error: 'stop refused' };
        return { ret: {} };
      case 'cont':
        contTried = true;
        status = 'paused';
        return { error: 'cont failed' };
      default:
        return { error: `unknown command ${c.execute}` };
    }
  };
  const server = net.createServer((sock) => {
    sockets.push(sock);
    sock.on('error', () => {});
    sock.write('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": []}}\n');
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const c = JSON.parse(buf.slice(0, i)) as Cmd;
        buf = buf.slice(i + 1);
        log.push(c.execute);
        const a = answer(c);
        sock.write(a.error !== undefined ? `{"error": {"class": "GenericError", "desc": ${JSON.stringify(a.error)}}, "id": ${JSON.stringify(c.id)}}\n` : `{"return": ${JSON.stringify(a.ret)}, "id": ${JSON.stringify(c.id)}}\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  // After the incoming stream completed, with autostart off: paused, not running.
  const streamCompleted = () => void (status = 'paused');
  return {
    path,
    log,
    streamCompleted,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function failedStart(stopWorks: boolean): Promise<{ err: PresyncError; target: QemuTarget; log: string[] }> {
  const q = await fakeIncomingQemu({ stopWorks });
  const target = await QemuTarget.start({ attach: { qmpSocket: q.path, image: IMAGE, machine: 'pc-i440fx-7.2' }, listenUri: 'tcp:127.0.0.1:0', runTimeoutMs: 2000 });
  try {
    // presync held it (stop in inmigrate) before listening.
    assert.deepEqual(q.log.filter((c) => c === 'stop' || c === 'migrate-incoming'), ['stop', 'migrate-incoming']);
    q.streamCompleted();
    let err: unknown;
    await target.hook().start({ imagePath: IMAGE, geometry: { pageSize: 4096, pageCount: SIZE / 4096 }, deviceState: new Uint8Array(0), sessionId: 's' }).catch((e: unknown) => (err = e));
    assert.ok(err instanceof PresyncError, String(err));
    return { err, target, log: q.log };
  } finally {
    await target.close();
    await q.stop();
  }
}

describe('--attach-qmp: a failed start at the handover', () => {
  it('seen stopped: a definite failure (HANDOVER_HOOK, the source resumes) and the QEMU is left to its launcher (spoiled, never killed)', async () => {
    const { err, target, log } = await failedStart(true);
    assert.equal(err.code, ErrorCodes.HANDOVER_HOOK, err.message);
    assert.match(err.message, /it is stopped/);
    assert.equal(target.spoiled?.reason, 'attempt-failed');
    assert.ok(log.lastIndexOf('stop') > log.indexOf('cont'), 'stop was sent after the failed cont');
    assert.equal(log.includes('quit'), false, 'presync never quits a QEMU it did not start');
  });

  it('not seen stopped: the session is cut without an ERROR (CONNECTION), so the source stays paused, in doubt', async () => {
    const { err, target } = await failedStart(false);
    assert.equal(err.code, ErrorCodes.CONNECTION, err.message);
    assert.equal(target.spoiled?.reason, 'in-doubt');
    assert.equal(target.spoiled?.error.code, ErrorCodes.HANDOVER_IN_DOUBT);
  });
});
