import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { QmpClient, QmpCommandError, type QmpEvent } from '../../src/qemu/qmp.ts';
import { completedFigures, waitMigrationStatus } from '../../src/qemu/switchover.ts';

const dir = mkdtempSync(join(tmpdir(), 'presync-qmp-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "test"}, "capabilities": ["oob"]}}\n';
const ts = '"timestamp": {"seconds": 1700000000, "microseconds": 5}';

interface Cmd {
  execute: string;
  id: string;
  arguments?: Record<string, unknown>;
}

/**
 * A QMP server over a real unix socket. `handle` gets each command after the
 * capabilities handshake and writes whatever it likes to the socket.
 */
async function fakeQemu(handle: (cmd: Cmd, sock: net.Socket) => void, opts: { greeting?: string; onConnect?: (s: net.Socket) => void } = {}) {
  const path = join(dir, `qmp-${n++}.sock`);
  const sockets: net.Socket[] = [];
  const received: Cmd[] = [];
  const server = net.createServer((sock) => {
    sockets.push(sock);
    sock.on('error', () => {});
    if (opts.onConnect) return opts.onConnect(sock);
    sock.write(opts.greeting ?? GREETING);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, i)) as Cmd;
        buf = buf.slice(i + 1);
        received.push(cmd);
        if (cmd.execute === 'qmp_capabilities') sock.write(`{"return": {}, "id": ${JSON.stringify(cmd.id)}}\n`);
        else handle(cmd, sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    received,
    sockets,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const reply = (cmd: Cmd, ret: unknown) => `{"return": ${JSON.stringify(ret)}, "id": ${JSON.stringify(cmd.id)}}\n`;

async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<PresyncError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof PresyncError, `expected a PresyncError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected rejection with ${code}`);
}

describe('QmpClient against a fake QMP server', () => {
  it('handshakes, reads the greeting, and returns typed, validated results', async () => {
    const srv = await fakeQemu((cmd, s) => {
      if (cmd.execute === 'query-status') s.write(reply(cmd, { status: 'running', singlestep: false, running: true }));
      if (cmd.execute === 'qom-get') s.write(reply(cmd, `/objects/${String(cmd.arguments?.property)}`));
    });
    const qmp = await QmpClient.connect(srv.path);
    assert.deepEqual(qmp.greeting?.version, { major: 7, minor: 2, micro: 22, package: 'test' });
    assert.equal(srv.received[0].execute, 'qmp_capabilities');
    const st = await qmp.execute('query-status');
    assert.deepEqual(st, { running: true, status: 'running' });
    assert.equal(await qmp.execute('qom-get', { path: '/machine', property: 'x' }), '/objects/x');
    assert.deepEqual(srv.received[2].arguments, { path: '/machine', property: 'x' });
    qmp.close();
    await srv.stop();
  });

  it('reassembles lines split across chunks, byte by byte, including multi-byte UTF-8', async () => {
    const srv = await fakeQemu((cmd, s) => {
      const text = `{"return": {"status": "running", "running": true}, "id": ${JSON.stringify(cmd.id)}}\n`;
      const ev = `{"event": "NOTE", "data": {"msg": "héllo ✓"}, ${ts}}\n`;
      const bytes = Buffer.from(ev + text);
      let i = 0;
      const tick = () => {
        if (i >= bytes.length) return;
        s.write(bytes.subarray(i, i + 1));
        i++;
        setImmediate(tick);
      };
      tick();
    });
    const qmp = await QmpClient.connect(srv.path);
    const evP = qmp.waitForEvent('NOTE', undefined, 5000);
    const st = await qmp.execute('query-status');
    assert.equal(st.running, true);
    assert.equal((await evP).data.msg, 'héllo ✓');
    qmp.close();
    await srv.stop();
  });

  it('matches replies by id when events are interleaved and replies come out of order', async () => {
    const held: Cmd[] = [];
    const srv = await fakeQemu((cmd, s) => {
      held.push(cmd);
      if (held.length < 2) return;
      // Answer the second command first, with events around and between.
      s.write(`{"event": "STOP", ${ts}}\n` + reply(held[1], { status: 'paused', running: false }) + `{"event": "RESUME", "data": {}, ${ts}}\n` + reply(held[0], { status: 'running', running: true }));
    });
    const qmp = await QmpClient.connect(srv.path);
    const seen: QmpEvent[] = [];
    qmp.onEvent((e) => seen.push(e));
    const [a, b] = await Promise.all([qmp.execute('query-status'), qmp.execute('query-status')]);
    assert.equal(a.status, 'running');
    assert.equal(b.status, 'paused');
    assert.deepEqual(
      seen.map((e) => e.event),
      ['STOP', 'RESUME'],
    );
    assert.deepEqual(seen[0].data, {}, 'an event without data gets an empty data object');
    assert.deepEqual(seen[0].timestamp, { seconds: 1700000000, microseconds: 5 });
    qmp.close();
    await srv.stop();
  });

  it('turns QMP error replies into QmpCommandError with class and desc, and keeps the connection usable', async () => {
    const srv = await fakeQemu((cmd, s) => {
      if (cmd.execute === 'nonexistent') s.write(`{"id": ${JSON.stringify(cmd.id)}, "error": {"class": "CommandNotFound", "desc": "The command nonexistent has not been found"}}\n`);
      else s.write(reply(cmd, { status: 'running', running: true }));
    });
    const qmp = await QmpClient.connect(srv.path);
    const e = await rejectsWith(qmp.execute('nonexistent'), ErrorCodes.QMP, /nonexistent has not been found/);
    assert.ok(e instanceof QmpCommandError);
    assert.equal(e.qmpClass, 'CommandNotFound');
    assert.equal(e.qmpDesc, 'The command nonexistent has not been found');
    assert.equal(e.command, 'nonexistent');
    assert.equal((await qmp.execute('query-status')).running, true);
    qmp.close();
    await srv.stop();
  });

  it('rejects a reply of the wrong shape with PRESYNC_ERR_QMP', async () => {
    const srv = await fakeQemu((cmd, s) => {
      if (cmd.execute === 'query-status') s.write(reply(cmd, { status: 7, running: 'yes' }));
      if (cmd.execute === 'query-migrate') s.write(reply(cmd, { status: 'warp-speed' }));
      if (cmd.execute === 'cont') s.write(`{"id": ${JSON.stringify(cmd.id)}, "error": "nope"}\n`);
    });
    const qmp = await QmpClient.connect(srv.path);
    await rejectsWith(qmp.execute('query-status'), ErrorCodes.QMP, /running/);
    await rejectsWith(qmp.execute('query-migrate'), ErrorCodes.QMP, /warp-speed/);
    await rejectsWith(qmp.execute('cont'), ErrorCodes.QMP, /malformed error/);
    assert.equal(qmp.isClosed, false, 'a badly shaped reply to one command does not break the connection');
    qmp.close();
    await srv.stop();
  });

  for (const [name, garbage] of [
    ['malformed JSON', '{"return": {}, "id": \n'],
    ['a non-object', '42\n'],
    ['an object that is neither reply nor event', '{"hello": 1}\n'],
    ['a reply without id', '{"return": {}}\n'],
    ['a reply with an unknown id', '{"return": {}, "id": "someone-else"}\n'],
    ['an event without timestamp', '{"event": "STOP"}\n'],
  ] as const) {
    it(`drops the connection on ${name}: pending commands and later calls reject with PRESYNC_ERR_QMP`, async () => {
      const srv = await fakeQemu((_cmd, s) => s.write(garbage));
      const qmp = await QmpClient.connect(srv.path);
      const waiting = qmp.waitForEvent('NEVER', undefined, 5000);
      await rejectsWith(qmp.execute('query-status'), ErrorCodes.QMP, /connection dropped/);
      await rejectsWith(waiting, ErrorCodes.QMP);
      assert.equal(qmp.isClosed, true);
      await rejectsWith(qmp.execute('query-status'), ErrorCodes.QMP);
      assert.equal((await qmp.closed).code, ErrorCodes.QMP);
      await srv.stop();
    });
  }

  it('refuses an endless line instead of buffering it', async () => {
    const srv = await fakeQemu((_cmd, s) => s.write(`{"return": "${'x'.repeat(5000)}`));
    const qmp = await QmpClient.connect(srv.path, { maxLineBytes: 1024 });
    await rejectsWith(qmp.execute('query-status'), ErrorCodes.QMP, /longer than 1024/);
    await srv.stop();
  });

  it('times out a command with PRESYNC_ERR_TIMEOUT and ignores its late reply', async () => {
    let late: Cmd | undefined;
    const srv = await fakeQemu((cmd, s) => {
      if (cmd.execute === 'stop') late = cmd;
      else {
        if (late) s.write(reply(late, {}));
        s.write(reply(cmd, { status: 'running', running: true }));
      }
    });
    const qmp = await QmpClient.connect(srv.path);
    await rejectsWith(qmp.execute('stop', undefined, { timeoutMs: 50 }), ErrorCodes.TIMEOUT, /stop/);
    assert.equal((await qmp.execute('query-status')).running, true);
    assert.equal(qmp.isClosed, false);
    await rejectsWith(qmp.waitForEvent('NEVER', undefined, 30), ErrorCodes.TIMEOUT, /NEVER/);
    qmp.close();
    await srv.stop();
  });

  it('rejects pending commands and event waits with PRESYNC_ERR_QEMU when the server resets the socket', async () => {
    const srv = await fakeQemu((cmd, s) => {
      if (cmd.execute === 'quit') {
        s.write(`{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}, ${ts}}\n`);
        s.end(() => s.destroy());
      }
    });
    const qmp = await QmpClient.connect(srv.path);
    const it = qmp.events();
    const pending = qmp.execute('query-status');
    const waiting = qmp.waitForEvent('RESUME', undefined, 5000);
    const quit = qmp.execute('quit');
    await rejectsWith(pending, ErrorCodes.QEMU, /closed|exited/);
    await rejectsWith(quit, ErrorCodes.QEMU);
    await rejectsWith(waiting, ErrorCodes.QEMU);
    const first = await it.next();
    assert.equal(first.done, false);
    assert.equal(first.value?.event, 'SHUTDOWN');
    assert.equal((await it.next()).done, true, 'the event iterator ends with the connection');
    await rejectsWith(qmp.execute('query-status'), ErrorCodes.QEMU);
    await srv.stop();
  });

  it('waitForEvent stops on its AbortSignal with PRESYNC_ERR_ABORTED', async () => {
    const srv = await fakeQemu(() => {});
    const qmp = await QmpClient.connect(srv.path);
    const ac = new AbortController();
    const w = qmp.waitForEvent('RESUME', undefined, 60_000, { signal: ac.signal });
    ac.abort();
    await rejectsWith(w, ErrorCodes.ABORTED, /RESUME/);
    await rejectsWith(qmp.waitForEvent('RESUME', undefined, 60_000, { signal: ac.signal }), ErrorCodes.ABORTED);
    qmp.close();
    await srv.stop();
  });

  it('quit() treats the socket closing before the reply as success', async () => {
    const srv = await fakeQemu((cmd, s) => {
      if (cmd.execute === 'quit') s.destroy();
    });
    const qmp = await QmpClient.connect(srv.path);
    await qmp.quit();
    assert.equal(qmp.isClosed, true);
    await srv.stop();
  });

  it('waitForEvent applies its predicate and the events() iterator delivers in order', async () => {
    const srv = await fakeQemu((cmd, s) => {
      for (const st of ['setup', 'active', 'pre-switchover']) s.write(`{"event": "MIGRATION", "data": {"status": "${st}"}, ${ts}}\n`);
      s.write(reply(cmd, {}));
    });
    const qmp = await QmpClient.connect(srv.path);
    const it = qmp.events();
    const want = qmp.waitForEvent('MIGRATION', (e) => e.data.status === 'pre-switchover', 5000);
    await qmp.execute('migrate', { uri: 'tcp:127.0.0.1:1' });
    assert.equal((await want).data.status, 'pre-switchover');
    const got: unknown[] = [];
    for await (const ev of it) {
      got.push(ev.data.status);
      if (got.length === 3) break;
    }
    assert.deepEqual(got, ['setup', 'active', 'pre-switchover']);
    qmp.close();
    await srv.stop();
  });

  it('a MIGRATION event in the same read as the query reply is not lost (it would cost a whole poll interval)', { timeout: 20_000 }, async () => {
    let queries = 0;
    const srv = await fakeQemu((cmd, s) => {
      if (cmd.execute !== 'query-migrate') return;
      queries++;
      // First answer: still active, and in the same write the event that says it moved on.
      if (queries === 1) s.write(reply(cmd, { status: 'active' }) + `{"event": "MIGRATION", "data": {"status": "pre-switchover"}, ${ts}}\n`);
      else s.write(reply(cmd, { status: 'pre-switchover' }));
    });
    const qmp = await QmpClient.connect(srv.path);
    // A poll interval far beyond the test's timeout: only the event can wake the wait in time.
    const info = await waitMigrationStatus(qmp, ['pre-switchover'], 120_000, 60_000);
    assert.equal(info.status, 'pre-switchover');
    assert.equal(queries, 2);
    qmp.close();
    await srv.stop();
  });

  it('a completed migration whose times QEMU has not filled in yet is asked again until they are', async () => {
    let queries = 0;
    const srv = await fakeQemu((cmd, s) => {
      if (cmd.execute !== 'query-migrate') return;
      queries++;
      // QEMU 7.2 reports completed a moment before it computes total-time and downtime.
      const times = queries < 3 ? { 'total-time': 0, downtime: 0 } : { 'total-time': 1234, downtime: 56 };
      s.write(reply(cmd, { status: 'completed', ...times }));
    });
    const qmp = await QmpClient.connect(srv.path);
    const first = await qmp.execute('query-migrate');
    assert.equal(first.totalTimeMs, 0);
    const settled = await completedFigures(qmp, first);
    assert.equal(settled.totalTimeMs, 1234);
    assert.equal(settled.downtimeMs, 56);
    assert.equal(queries, 3);
    qmp.close();
    await srv.stop();
  });

  it('fails connect cleanly on a bad greeting, a silent server, and a missing socket', async () => {
    const bad = await fakeQemu(() => {}, { greeting: '{"QMP": {"version": "seven"}}\n' });
    await rejectsWith(QmpClient.connect(bad.path, { connectTimeoutMs: 2000 }), ErrorCodes.QMP, /greeting/);
    await bad.stop();
    const silent = await fakeQemu(() => {}, { onConnect: () => {} });
    await rejectsWith(QmpClient.connect(silent.path, { connectTimeoutMs: 200 }), ErrorCodes.TIMEOUT, /greeting/);
    await silent.stop();
    await rejectsWith(QmpClient.connect(join(dir, 'absent.sock'), { connectTimeoutMs: 150 }), ErrorCodes.TIMEOUT, /not reachable/);
  });

  it('connects to a socket that appears only after connect() was called', async () => {
    const path = join(dir, `late-${n++}.sock`);
    const p = QmpClient.connect(path, { connectTimeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 150));
    const server = net.createServer((s) => {
      s.write(GREETING);
      s.on('data', (d) => {
        const cmd = JSON.parse(d.toString()) as Cmd;
        s.write(reply(cmd, {}));
      });
    });
    await new Promise<void>((r) => server.listen(path, r));
    const qmp = await p;
    assert.equal(qmp.greeting?.version.major, 7);
    qmp.close();
    await new Promise<void>((r) => server.close(() => r()));
  });
});
