import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, openSync, writeSync, closeSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController, type GuestController } from '../../src/guest/controller.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { MemoryTransport, MemoryNetwork } from '../../src/transport/memory.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import type { Connection, Transport } from '../../src/transport/types.ts';
import type { EpochDecision, EpochObservation } from '../../src/core/types.ts';
import type { TargetEvent } from '../../src/engine/target-session.ts';
import { FrameDecoder } from '../../src/wire/decoder.ts';
import { encodeFrame } from '../../src/wire/framing.ts';
import { metaPath } from '../../src/guest/target-image.ts';
import { scratchDir } from '../helpers/scratch.ts';

const SECRET = Buffer.from('0123456789abcdef0123456789abcdef');
const PAGE = 4096;

function makeImage(dir: string, pages: number): string {
  const p = join(dir, 'src.img');
  const b = Buffer.alloc(pages * PAGE);
  for (let i = 0; i < pages; i += 3) b.writeUInt32LE(i * 2654435761 >>> 0, i * PAGE + 8);
  writeFileSync(p, b);
  return p;
}

/** Writes a counter into page `page` of the image every few ms, like a running guest. */
function startWriter(path: string, pages: number): { stop: () => void; controller: GuestController } {
  const fd = openSync(path, 'r+');
  let counter = 0;
  let paused = false;
  const buf = Buffer.alloc(8);
  const timer = setInterval(() => {
    if (paused) return;
    for (let k = 0; k < 20; k++) {
      counter++;
      buf.writeBigUInt64LE(BigInt(counter));
      writeSync(fd, buf, 0, 8, ((counter * 7) % pages) * PAGE);
    }
  }, 2);
  return {
    stop: () => {
      clearInterval(timer);
      closeSync(fd);
    },
    controller: {
      kind: 'test',
      pause: async () => void (paused = true),
      resume: async () => void (paused = false),
      commit: async () => undefined,
      release: async () => undefined,
      isAlive: () => true,
    },
  };
}

async function migrateOnce(transport: Transport, policy: string) {
  const dir = scratchDir('presync-eng-');
  const pages = 2048;
  const src = makeImage(dir, pages);
  const dst = join(dir, 'dst.img');
  const agent = await TargetAgent.start({ transport, listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
  const w = startWriter(src, pages);
  const m = new SourceMigration({
    transport,
    to: agent.address,
    secret: SECRET,
    imagePath: src,
    policy: createPolicy(policy, { geometry: { pageSize: PAGE, pageCount: pages }, seed: 1 }),
    controller: w.controller,
    epochMs: 20,
  });
  setTimeout(() => m.launch(), 400);
  const r = await m.run();
  w.stop();
  await agent.close();
  return { r, src, dst };
}

for (const [name, mk] of [
  ['memory', () => new MemoryTransport({ network: new MemoryNetwork() })],
  ['tcp', () => new TcpTransport()],
] as const) {
  test(`a written image migrates bit for bit over ${name} (presync-naive)`, async () => {
    const { r, src, dst } = await migrateOnce(mk(), 'presync-naive');
    assert.equal(r.outcome, 'done', JSON.stringify(r.error));
    assert.equal(r.verified, true);
    assert.ok(readFileSync(src).equals(readFileSync(dst)), 'target image equals source');
    assert.ok(r.presyncBytes > 0);
    assert.ok(r.downtimeMs !== null && r.launchToRunningMs !== null && r.downtimeMs <= r.launchToRunningMs);
    assert.equal(JSON.parse(readFileSync(metaPath(dst), 'utf8')).state, 'valid');
  });
}

test('precopy moves everything after launch and still verifies', async () => {
  const { r, src, dst } = await migrateOnce(new MemoryTransport({ network: new MemoryNetwork() }), 'precopy');
  assert.equal(r.outcome, 'done', JSON.stringify(r.error));
  assert.equal(r.presyncBytes, 0);
  assert.ok(readFileSync(src).equals(readFileSync(dst)));
});

test('the wrong secret fails with PRESYNC_ERR_AUTH before any page is written', async () => {
  const transport = new MemoryTransport({ network: new MemoryNetwork() });
  const dir = scratchDir('presync-eng-');
  const src = makeImage(dir, 64);
  const dst = join(dir, 'dst.img');
  const agent = await TargetAgent.start({ transport, listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
  const m = new SourceMigration({
    transport,
    to: agent.address,
    secret: Buffer.from('another-secret-of-32-bytes-xxxxx'),
    imagePath: src,
    policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: 64 }, seed: 1 }),
    controller: new ImageOnlyController(),
  });
  m.launch();
  const r = await m.run();
  await agent.close();
  assert.equal(r.outcome, 'rolled-back');
  assert.equal(r.error?.code, 'PRESYNC_ERR_AUTH');
  assert.equal(existsSync(dst), false, 'no target image was created');
});

/**
 * Forwards what the source writes frame by frame, but silently drops one
 * PAGES frame: the target acknowledges later frames (acks are cumulative), so
 * only verification can notice the pages it never got.
 */
function droppingTransport(inner: Transport, dropPagesFrameNo: number): Transport & { dropped: () => number } {
  let pagesSeen = 0;
  let dropped = 0;
  return {
    name: `${inner.name}+drop`,
    listen: (a, h) => inner.listen(a, h),
    dropped: () => dropped,
    async dial(a, o) {
      const conn = await inner.dial(a, o);
      const dec = new FrameDecoder();
      const wrapped: Connection = {
        remote: conn.remote,
        async write(chunk: Uint8Array): Promise<void> {
          for (const f of dec.push(chunk)) {
            if (f.type === 'pages' && f.pages.length > 0 && ++pagesSeen === dropPagesFrameNo) {
              dropped += f.pages.length;
              continue;
            }
            await conn.write(encodeFrame(f));
          }
        },
        read: () => conn.read(),
        closeWrite: () => conn.closeWrite(),
        close: (x) => conn.close(x),
        destroy: (e) => conn.destroy(e),
        closed: conn.closed,
        get bytesWritten() {
          return conn.bytesWritten;
        },
        get bytesRead() {
          return conn.bytesRead;
        },
        get writableLength() {
          return conn.writableLength;
        },
        [Symbol.asyncIterator]: () => conn[Symbol.asyncIterator](),
      };
      return wrapped;
    },
  };
}

test('pages the target silently lost: the verify summary differs, the full table names them, they are sent again and the image ends bit for bit', async () => {
  const dir = scratchDir('presync-eng-');
  const pages = 2048;
  const src = makeImage(dir, pages);
  const dst = join(dir, 'dst.img');
  const net = new MemoryNetwork();
  const events: TargetEvent[] = [];
  const agent = await TargetAgent.start({ transport: new MemoryTransport({ network: net }), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET, onEvent: (e) => events.push(e) });
  const transport = droppingTransport(new MemoryTransport({ network: net }), 3);
  // Nothing writes the image: a lost page is never sent again before verification.
  const m = new SourceMigration({
    transport,
    to: agent.address,
    secret: SECRET,
    imagePath: src,
    policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: pages }, seed: 1 }),
    controller: new ImageOnlyController(),
    epochMs: 20,
  });
  setTimeout(() => m.launch(), 300);
  const r = await m.run();
  await agent.close();
  assert.ok(transport.dropped() > 0, 'a PAGES frame was dropped');
  assert.equal(r.outcome, 'done', JSON.stringify(r.error));
  assert.equal(r.verified, true);
  const verifies = events.filter((e): e is Extract<TargetEvent, { event: 'verify' }> => e.event === 'verify');
  assert.ok(verifies.length >= 2, `verify events: ${JSON.stringify(verifies)}`);
  assert.equal(verifies[0].match, false, 'the full table found the lost pages');
  assert.ok(verifies[0].mismatches > 0 && verifies[0].mismatches <= transport.dropped());
  assert.equal(verifies.at(-1)!.match, true);
  assert.ok(readFileSync(src).equals(readFileSync(dst)), 'target image equals source');
});

test('probes and pages sent ahead of the pause (fresh-first): only the probed pages are looked at, the guest writes on while the pause takes effect, and the image ends bit for bit', async () => {
  const dir = scratchDir('presync-eng-');
  const pages = 2048;
  const src = makeImage(dir, pages);
  const dst = join(dir, 'dst.img');
  const transport = new MemoryTransport({ network: new MemoryNetwork() });
  const agent = await TargetAgent.start({ transport, listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret: SECRET });
  // Two 64-page "frame buffers" redrawn in turn every 15 ms, plus a page outside them.
  const fd = openSync(src, 'r+');
  const frame = Buffer.alloc(64 * PAGE);
  let n = 0;
  let running = true;
  const timer = setInterval(() => {
    if (!running) return;
    n++;
    frame.fill(n & 0xff);
    writeSync(fd, frame, 0, frame.length, (100 + (n % 2) * 64) * PAGE);
    writeSync(fd, frame, 0, 8, 1500 * PAGE);
  }, 15);
  const hot = new Uint32Array(128).map((_, i) => 100 + i);
  const seen: number[][] = [];
  let looks = 0;
  let burstSeenAt = -1;
  let pauses = 0;
  const events: string[] = [];
  const policy = {
    name: 'scripted-fresh-first',
    decide(obs: EpochObservation): EpochDecision {
      const none = new Uint32Array(0);
      if (obs.phase === 'presync') return { send: obs.stale.toArray(), budgetBytes: Infinity, switchover: false };
      if (looks > 0) seen.push([...obs.dirty]);
      const written = [...obs.dirty].filter((p) => p >= 100 && p < 228);
      const fresh = Uint32Array.from(written.filter((p) => obs.stale.has(p)));
      if (burstSeenAt >= 0 && looks > burstSeenAt + 3) return { send: fresh, budgetBytes: Infinity, switchover: true, converged: true };
      looks++;
      if (burstSeenAt < 0 && written.length > 0 && looks > 1) {
        // Start the pause at the burst's first sight, keep looking and sending for a few looks.
        burstSeenAt = looks;
        return { send: fresh, budgetBytes: Infinity, switchover: false, probe: { pages: hot, afterMs: 2 }, startPause: true };
      }
      return { send: burstSeenAt >= 0 ? fresh : none, budgetBytes: burstSeenAt >= 0 ? Infinity : 0, switchover: false, probe: { pages: hot, afterMs: 2 } };
    },
  };
  const m = new SourceMigration({
    transport,
    to: agent.address,
    secret: SECRET,
    imagePath: src,
    policy,
    controller: {
      kind: 'test',
      // Like QEMU: the guest runs on for a while after pause() is called.
      pauseLagMs: 1000,
      pause: async () => {
        pauses++;
        await new Promise((r) => setTimeout(r, 40));
        running = false;
      },
      resume: async () => void (running = true),
      commit: async () => undefined,
      release: async () => undefined,
      isAlive: () => true,
    },
    epochMs: 20,
    onEvent: (e) => {
      if (e.event === 'paused' || e.event === 'phase') events.push(e.event === 'paused' ? 'paused' : e.phase);
    },
  });
  setTimeout(() => m.launch(), 300);
  const r = await m.run();
  clearInterval(timer);
  closeSync(fd);
  await agent.close();
  assert.equal(r.outcome, 'done', JSON.stringify(r.error));
  assert.equal(r.verified, true);
  assert.ok(readFileSync(src).equals(readFileSync(dst)), 'target image equals source');
  assert.ok(seen.length >= 1, 'at least one probe was looked at');
  for (const s of seen) for (const p of s) assert.ok(p >= 100 && p < 228, `page ${p} reported by a probe of pages 100-227 only`);
  assert.ok(r.series.some((p) => p.phase === 'launched' && p.sentPages > 0), 'pages went ahead of the pause');
  assert.ok(burstSeenAt > 0, 'the scripted burst was seen');
  assert.equal(pauses, 1, 'the pause started early is not started again at the switchover');
  assert.ok(events.includes('paused') && events.indexOf('paused') < events.indexOf('verify'), events.join(' '));
});
