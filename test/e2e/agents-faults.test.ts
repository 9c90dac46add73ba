import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController, ProcessController, processState } from '../../src/guest/controller.ts';
import { SourceMigration, type SourceEvent } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { FaultProxy } from '../../src/transport/fault-proxy.ts';
import { ShapedTransport } from '../../src/transport/shaper.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { metaPath } from '../../src/guest/target-image.ts';
import { scratchDir } from '../helpers/scratch.ts';

const SECRET = Buffer.from('fault-test-secret-0123456789abcd');
const PAGE = 4096;
const WRITER = resolve(import.meta.dirname, '../fixtures/image-writer.mjs');

test('a connection cut during presync resumes: pages the target already holds are not sent again', { timeout: 60_000 }, async (t) => {
  const dir = scratchDir('presync-fault-');
  const pages = 4096;
  const src = join(dir, 'src.img');
  writeFileSync(src, randomBytes(pages * PAGE));
  const dst = join(dir, 'dst.img');
  const agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
  const proxy = await FaultProxy.start({ upstream: agent.address });
  // 16 MiB at 20 MB/s: the cut at 6 MiB lands in the middle of the initial sync.
  proxy.cutAfter('up', 6 * 1024 * 1024);
  const events: SourceEvent[] = [];
  const m = new SourceMigration({
    transport: new ShapedTransport(new TcpTransport(), { rate: 20_000_000 }),
    to: proxy.address,
    secret: SECRET,
    imagePath: src,
    policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: pages }, seed: 1 }),
    controller: new ImageOnlyController(),
    bandwidthBytesPerSec: 20_000_000,
    epochMs: 50,
    onEvent: (e) => {
      events.push(e);
      if (e.event === 'connected' && e.attempt > 0) setTimeout(() => m.launch(), 200);
    },
  });
  const r = await m.run();
  await proxy.close();
  await agent.close();
  assert.equal(r.outcome, 'done', JSON.stringify(r.error));
  assert.ok(readFileSync(src).equals(readFileSync(dst)));
  const disconnects = events.filter((e) => e.event === 'disconnected');
  assert.equal(disconnects.length, 1, 'the cut was seen once');
  const resumed = events.find((e): e is Extract<SourceEvent, { event: 'connected' }> => e.event === 'connected' && e.attempt > 0);
  assert.ok(resumed, 'reconnected');
  assert.equal(resumed.resume, true, 'the target offered to resume its partial image');
  assert.ok(resumed.heldPages > 500, `target held ${resumed.heldPages} pages at the reconnect`);
  // Pages sent twice = pages lost in flight at the cut (sent, never held) + pages re-sent although held.
  const lostInFlight = resumed.sentBeforePages - resumed.heldPages;
  const resentHeld = r.resentPages - Math.max(0, lostInFlight);
  t.diagnostic(`held at reconnect ${resumed.heldPages}, lost in flight ${lostInFlight}, re-sent although held ${resentHeld}, resentPages ${r.resentPages}`);
  assert.ok(resentHeld <= resumed.heldPages * 0.01, `re-sent ${resentHeld} of ${resumed.heldPages} pages the target already held`);
});

test('a connection cut after launch rolls back: the paused source process runs again; the agent serves the next migration', { timeout: 60_000 }, async () => {
  const dir = scratchDir('presync-fault-');
  const src = join(dir, 'src.img');
  const report = join(dir, 'report');
  const writer = spawn(process.execPath, [WRITER, '--image', src, '--pages', '4096', '--report', report], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 200 && !existsSync(report); i++) await new Promise((r) => setTimeout(r, 25));
    const dst = join(dir, 'dst.img');
    const agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
    const proxy = await FaultProxy.start({ upstream: agent.address });
    const geometry = { pageSize: PAGE, pageCount: 4096 };
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: proxy.address,
      secret: SECRET,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry, seed: 1 }),
      controller: new ProcessController(writer.pid!),
      epochMs: 50,
      reconnectAttempts: 1,
      onEvent: (e) => {
        // The guest is paused right after this phase begins: cut then.
        if (e.event === 'phase' && e.phase === 'final-copy') setTimeout(() => proxy.cutAll(), 1);
      },
    });
    setTimeout(() => m.launch(), 800);
    const r = await m.run();
    assert.equal(r.outcome, 'rolled-back');
    assert.ok(r.error && ['PRESYNC_ERR_CONNECTION', 'PRESYNC_ERR_TIMEOUT'].includes(r.error.code), JSON.stringify(r.error));
    const st = processState(writer.pid!);
    assert.ok(st !== null && st !== 'T', `source process state ${st}`);
    const before = readFileSync(src).readBigUInt64LE(8);
    await new Promise((res) => setTimeout(res, 300));
    assert.ok(readFileSync(src).readBigUInt64LE(8) > before, 'the source process makes progress again');
    for (let i = 0; i < 100 && JSON.parse(readFileSync(metaPath(dst), 'utf8')).state !== 'invalid'; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(JSON.parse(readFileSync(metaPath(dst), 'utf8')).state, 'invalid', 'the target image is marked invalid');

    // The same agent takes the next migration of the same guest.
    const again = new SourceMigration({
      transport: new TcpTransport(),
      to: agent.address,
      secret: SECRET,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry, seed: 1 }),
      controller: new ProcessController(writer.pid!),
      epochMs: 50,
    });
    setTimeout(() => again.launch(), 800);
    const r2 = await again.run();
    assert.equal(r2.outcome, 'done', JSON.stringify(r2.error));
    await proxy.close();
    await agent.close();
  } finally {
    writer.kill('SIGKILL');
  }
});
