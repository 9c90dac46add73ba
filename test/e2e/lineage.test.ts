/**
 * Image identity that cannot collide (issue 15, case 2): the same image id
 * (same path and size) from another migration lineage never resumes into the
 * target image, a target image that was handed over (`valid`) is never
 * written again without --force, and a data stream must belong to the
 * session's lineage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController } from '../../src/guest/controller.ts';
import { SourceMigration, type MigrateOptions, type MigrationResult, type SourceEvent } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { FrameChannel } from '../../src/engine/frame-channel.ts';
import { ClientHandshake } from '../../src/wire/handshake.ts';
import { Capability } from '../../src/wire/constants.ts';

const SECRET = randomBytes(32);
const PAGE = 4096;
const PAGES = 256;

function source(agent: TargetAgent, imagePath: string, extra: Partial<MigrateOptions>, events: SourceEvent[]): SourceMigration {
  return new SourceMigration({
    transport: new TcpTransport(),
    to: agent.address,
    secret: SECRET,
    imagePath,
    imageId: 'app.img-same-path-same-size',
    policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: PAGES }, seed: 1 }),
    controller: new ImageOnlyController(),
    epochMs: 20,
    reconnectAttempts: 1,
    onEvent: (e) => events.push(e),
    ...extra,
  });
}

async function runToEnd(m: SourceMigration, events: SourceEvent[]): Promise<MigrationResult> {
  const run = m.run();
  for (let i = 0; i < 500 && !events.some((e) => e.event === 'progress' && e.status.stalePages === 0 && e.status.epoch > 2); i++) {
    if (events.some((e) => e.event === 'phase' && e.phase === 'rollback')) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  m.launch();
  return run;
}

test('a handed-over (valid) target image is never written again by another lineage with the same image id; --force allows it', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-lineage-'));
  let agent: TargetAgent | undefined;
  try {
    const a = join(dir, 'a.img');
    const b = join(dir, 'b.img');
    const dst = join(dir, 'dst.img');
    writeFileSync(a, randomBytes(PAGES * PAGE));
    writeFileSync(b, randomBytes(PAGES * PAGE));
    agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
    const ev1: SourceEvent[] = [];
    const r1 = await runToEnd(source(agent, a, {}, ev1), ev1);
    assert.equal(r1.outcome, 'done');
    assert.match(readFileSync(`${dst}.presync`, 'utf8'), /"state":"valid"/);
    // A second application that happens to have the same image id (same path and size elsewhere).
    const ev2: SourceEvent[] = [];
    const r2 = await runToEnd(source(agent, b, {}, ev2), ev2);
    assert.equal(r2.outcome, 'rolled-back', `the second lineage must be refused, got ${r2.outcome}`);
    assert.equal(r2.error?.code, 'PRESYNC_ERR_IMAGE_EXISTS');
    assert.ok(readFileSync(dst).equals(readFileSync(a)), 'the image the first application runs from is untouched');
    await agent.close();
    agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET, force: true });
    const ev3: SourceEvent[] = [];
    const r3 = await runToEnd(source(agent, b, {}, ev3), ev3);
    assert.equal(r3.outcome, 'done', `${r3.error?.code}: ${r3.error?.message}`);
    assert.ok(readFileSync(dst).equals(readFileSync(b)));
  } finally {
    await agent?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a partial image of another lineage with the same image id is not resumed (every page is sent again)', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-lineage-'));
  let agent: TargetAgent | undefined;
  try {
    const a = join(dir, 'a.img');
    const dst = join(dir, 'dst.img');
    writeFileSync(a, randomBytes(PAGES * PAGE));
    agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
    // A first lineage fills the image, then stops before launch (the image stays syncing).
    const ev1: SourceEvent[] = [];
    const m1 = source(agent, a, { lineageId: 'a'.repeat(32) }, ev1);
    const run1 = m1.run();
    for (let i = 0; i < 500 && !ev1.some((e) => e.event === 'progress' && e.status.stalePages === 0 && e.status.epoch > 2); i++) await new Promise((r) => setTimeout(r, 10));
    m1.stop();
    assert.equal((await run1).outcome, 'rolled-back');
    // The same lineage resumes; another lineage starts afresh.
    for (const [lineageId, resume] of [
      ['a'.repeat(32), true],
      ['b'.repeat(32), false],
    ] as const) {
      const ev: SourceEvent[] = [];
      const m = source(agent, a, { lineageId }, ev);
      const run = m.run();
      for (let i = 0; i < 500 && !ev.some((e) => e.event === 'connected'); i++) await new Promise((r) => setTimeout(r, 10));
      m.stop();
      await run;
      const c = ev.find((e) => e.event === 'connected');
      assert.ok(c && c.event === 'connected');
      assert.equal(c.resume, resume, `lineage ${lineageId[0]}…: resume ${c.resume}`);
    }
  } finally {
    await agent?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a data stream must carry the lineage of the session it joins', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-lineage-'));
  let agent: TargetAgent | undefined;
  try {
    const a = join(dir, 'a.img');
    writeFileSync(a, randomBytes(PAGES * PAGE));
    agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: join(dir, 'dst.img'), secret: SECRET });
    // A control connection with lineage A, then a join naming its session with lineage B.
    const geometry = { pageSize: PAGE, pageCount: PAGES };
    const open = async (lineageId: string, sessionId: string, join: boolean): Promise<FrameChannel> => {
      const ch = new FrameChannel(await new TcpTransport().dial(agent!.address));
      const hs = new ClientHandshake({
        secret: SECRET,
        geometry,
        imageId: 'app.img-same-path-same-size',
        sessionId,
        lineageId,
        ...(join ? { capabilities: Capability.STREAMS | Capability.JOIN } : {}),
      });
      for (const f of hs.start().send) await ch.send(f);
      for (;;) {
        const step = hs.receive(await ch.recv(5000));
        for (const f of step.send) await ch.send(f);
        if (step.result) return ch;
      }
    };
    const control = await open('a'.repeat(32), 'sess1', false);
    const stream = await open('b'.repeat(32), 'sess1', true);
    await assert.rejects(stream.recv(5000), (e: Error & { code?: string }) => e.code === 'PRESYNC_ERR_PROTOCOL' && /lineage/.test(e.message));
    control.destroy();
    stream.destroy();
  } finally {
    await agent?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
