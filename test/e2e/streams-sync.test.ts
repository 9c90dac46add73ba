import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController } from '../../src/guest/controller.ts';
import { SourceMigration, type SourceEvent } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { metaPath } from '../../src/guest/target-image.ts';
import { FaultProxy } from '../../src/transport/fault-proxy.ts';
import { ShapedTransport } from '../../src/transport/shaper.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import type { Connection, DialOptions, Transport, TransportAddress } from '../../src/transport/types.ts';

const SECRET = Buffer.from('streams-test-secret-0123456789ab');
const PAGE = 4096;

/** TCP that remembers every connection it dialed, so a test can cut exactly one stream. */
class RecordingTransport implements Transport {
  readonly name = 'recording(tcp)';
  readonly conns: Connection[] = [];
  private readonly inner = new TcpTransport();
  listen: Transport['listen'] = (a, h) => this.inner.listen(a, h);
  async dial(a: TransportAddress, o?: DialOptions): Promise<Connection> {
    const c = await this.inner.dial(a, o);
    this.conns.push(c);
    return c;
  }
}

/** Random pages with runs of zero pages between them (both encodings travel). */
function image(path: string, pages: number): Buffer {
  const b = randomBytes(pages * PAGE);
  for (let p = 0; p < pages; p += 7) b.fill(0, p * PAGE, (p + 1) * PAGE);
  writeFileSync(path, b);
  return b;
}

test('four streams: every stream carries pages, the target image ends byte-identical and verified', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-streams-'));
  try {
    const pages = 4096;
    const src = join(dir, 'src.img');
    const content = image(src, pages);
    const dst = join(dir, 'dst.img');
    const agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
    const proxy = await FaultProxy.start({ upstream: agent.address });
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: proxy.address,
      secret: SECRET,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: pages }, seed: 1 }),
      controller: new ImageOnlyController(),
      streams: 4,
      epochMs: 50,
      onEvent: (e) => {
        if (e.event === 'progress' && e.status.stalePages === 0) m.launch();
      },
    });
    const r = await m.run();
    const stats = proxy.stats;
    await proxy.close();
    await agent.close();
    assert.equal(r.outcome, 'done', JSON.stringify(r.error));
    assert.equal(r.verified, true);
    assert.equal(stats.connections, 4, 'one control connection and three joined data streams');
    assert.ok(readFileSync(dst).equals(content), 'target image equals the source byte for byte');
    assert.equal(JSON.parse(readFileSync(metaPath(dst), 'utf8')).state, 'valid');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a cut of one stream during presync: the migration reconnects every stream, resumes and ends byte-identical', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-streams-'));
  try {
    const pages = 4096;
    const src = join(dir, 'src.img');
    const content = image(src, pages);
    const dst = join(dir, 'dst.img');
    const agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
    const rec = new RecordingTransport();
    const events: SourceEvent[] = [];
    let cut = false;
    // 16 MiB at 20 MB/s: a cut after 4 MiB lands mid-sync.
    const m = new SourceMigration({
      transport: new ShapedTransport(rec, { rate: 20_000_000 }),
      to: agent.address,
      secret: SECRET,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: pages }, seed: 1 }),
      controller: new ImageOnlyController(),
      bandwidthBytesPerSec: 20_000_000,
      streams: 3,
      epochMs: 50,
      onEvent: (e) => {
        events.push(e);
        if (!cut && e.event === 'progress' && e.status.presyncBytes > 4 << 20) {
          cut = true;
          rec.conns[1].destroy(new Error('test cuts data stream 1'));
        }
        if (e.event === 'connected' && e.attempt > 0) setTimeout(() => m.launch(), 200);
      },
    });
    const r = await m.run();
    await agent.close();
    assert.equal(r.outcome, 'done', JSON.stringify(r.error));
    assert.ok(readFileSync(dst).equals(content), 'target image equals the source byte for byte');
    assert.equal(events.filter((e) => e.event === 'disconnected').length, 1, 'the cut was seen once');
    const again = events.find((e): e is Extract<SourceEvent, { event: 'connected' }> => e.event === 'connected' && e.attempt > 0);
    assert.ok(again && again.resume, 'reconnected and resumed the partial image');
    assert.ok(again.heldPages > 0, 'the target kept what the streams had delivered');
    assert.equal(rec.conns.length, 6, 'three streams, then three again');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a cut of one stream after the pause rolls back: source untouched, target image invalid, agent serves the next migration', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-streams-'));
  try {
    const pages = 2048;
    const src = join(dir, 'src.img');
    image(src, pages);
    const dst = join(dir, 'dst.img');
    const agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
    const rec = new RecordingTransport();
    const geometry = { pageSize: PAGE, pageCount: pages };
    const controller = new ImageOnlyController();
    const m = new SourceMigration({
      transport: rec,
      to: agent.address,
      secret: SECRET,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry, seed: 1 }),
      controller,
      streams: 2,
      epochMs: 50,
      reconnectAttempts: 1,
      onEvent: (e) => {
        if (e.event === 'progress' && e.status.stalePages === 0) m.launch();
        if (e.event === 'phase' && e.phase === 'final-copy') {
          // Pages written just before the pause must go in the final copy, over both streams: cut the data stream.
          writeFileSync(src, randomBytes(256 * PAGE), { flag: 'r+' });
          rec.conns[1].destroy(new Error('test cuts data stream 1'));
        }
      },
    });
    const r = await m.run();
    assert.equal(r.outcome, 'rolled-back', JSON.stringify(r));
    assert.equal(rec.conns.length, 2);
    await new Promise((res) => setTimeout(res, 200));
    assert.notEqual(JSON.parse(readFileSync(metaPath(dst), 'utf8')).state, 'valid', 'a rolled-back image is never valid');

    // The agent is still there and a second multi-stream migration goes through.
    const again = new SourceMigration({
      transport: new TcpTransport(),
      to: agent.address,
      secret: SECRET,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry, seed: 1 }),
      controller: new ImageOnlyController(),
      streams: 2,
      epochMs: 50,
      onEvent: (e) => {
        if (e.event === 'progress' && e.status.stalePages === 0) again.launch();
      },
    });
    const r2 = await again.run();
    await agent.close();
    assert.equal(r2.outcome, 'done', JSON.stringify(r2.error));
    assert.ok(readFileSync(dst).equals(readFileSync(src)), 'the second migration leaves a byte-identical image');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
