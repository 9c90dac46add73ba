/**
 * An image of several files (a VM with one RAM backend per NUMA node) is
 * migrated as one: one presync, one pause, one verify, each target file the
 * copy of the source file of its id. RAM-image files and real sockets, no
 * QEMU: two and three segments, a resume after a cut connection, damage in
 * one target file while the guest is paused, and layouts the target refuses
 * before writing anything.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import type { SegmentFile } from '../../src/core/image-layout.ts';
import { ImageOnlyController, type GuestController } from '../../src/guest/controller.ts';
import { metaPath } from '../../src/guest/target-image.ts';
import { SourceMigration, type MigrationResult, type SourceEvent } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import type { TargetEvent } from '../../src/engine/target-session.ts';
import { FaultProxy } from '../../src/transport/fault-proxy.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';

const SECRET = randomBytes(32);
const PAGE = 4096;

interface Rig {
  dir: string;
  src: Array<{ id: string; path: string; pages: number }>;
  dst: SegmentFile[];
}

function rig(sizes: Array<[string, number]>): Rig {
  const dir = mkdtempSync(join(tmpdir(), 'presync-segments-'));
  const src = sizes.map(([id, pages]) => {
    const path = join(dir, `src-${id}.ram`);
    writeFileSync(path, randomBytes(pages * PAGE));
    return { id, path, pages };
  });
  // The target names its files its own way; only the ids match.
  const dst = sizes.map(([id]) => ({ id, path: join(dir, `target-node-${id}.ram`) }));
  return { dir, src, dst };
}

/** Writes one random page at `page` of `path` (the guest at work). */
function scribble(path: string, page: number): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, randomBytes(PAGE), 0, PAGE, page * PAGE);
  } finally {
    closeSync(fd);
  }
}

/** Flips byte 7 of every page of `path`. */
function tamper(path: string, pages: number): void {
  const now = readFileSync(path);
  const fd = openSync(path, 'r+');
  try {
    for (let p = 0; p < pages; p++) writeSync(fd, Uint8Array.of(now[p * PAGE + 7] ^ 0xff), 0, 1, p * PAGE + 7);
  } finally {
    closeSync(fd);
  }
}

function sameFiles(r: Rig, dstOf: (id: string) => string): void {
  for (const s of r.src) {
    const a = readFileSync(s.path);
    const b = readFileSync(dstOf(s.id));
    assert.equal(b.length, a.length, `${s.id}: size`);
    let diff = 0;
    for (let p = 0; p < s.pages; p++) if (!a.subarray(p * PAGE, (p + 1) * PAGE).equals(b.subarray(p * PAGE, (p + 1) * PAGE))) diff++;
    assert.equal(diff, 0, `${s.id}: ${diff} of ${s.pages} pages differ from the source`);
  }
}

async function migrate(
  r: Rig,
  o: { dst?: SegmentFile[]; imagePath?: string; srcSegments?: boolean; controller?: GuestController; proxy?: (p: FaultProxy) => void; whilePresync?: () => void },
): Promise<{ r: MigrationResult; events: SourceEvent[]; targetEvents: TargetEvent[] }> {
  const targetEvents: TargetEvent[] = [];
  const events: SourceEvent[] = [];
  const agent = await TargetAgent.start({
    transport: new TcpTransport(),
    listen: { host: '127.0.0.1', port: 0 },
    ...(o.imagePath !== undefined ? { imagePath: o.imagePath } : { segments: o.dst ?? r.dst }),
    secret: SECRET,
    onEvent: (e) => targetEvents.push(e),
  });
  const proxy = o.proxy ? await FaultProxy.start({ upstream: agent.address }) : undefined;
  try {
    if (proxy) o.proxy!(proxy);
    const pageCount = r.src.reduce((n, s) => n + s.pages, 0);
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: proxy ? proxy.address : agent.address,
      secret: SECRET,
      imagePath: r.src[0].path,
      ...(o.srcSegments === false ? {} : { segments: r.src.map((s) => ({ id: s.id, path: s.path })) }),
      policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount }, seed: 1 }),
      controller: o.controller ?? new ImageOnlyController(),
      epochMs: 20,
      reconnectAttempts: 3,
      onEvent: (e) => events.push(e),
    });
    const run = m.run();
    let scribbled = 0;
    for (let i = 0; i < 1000; i++) {
      if (events.some((e) => e.event === 'phase' && e.phase === 'rollback')) break;
      if (events.some((e) => e.event === 'progress' && e.status.stalePages === 0 && e.status.epoch > 2) && scribbled >= 3) break;
      if (events.some((e) => e.event === 'progress') && scribbled < 3) {
        o.whilePresync?.();
        scribbled++;
      }
      await new Promise((res) => setTimeout(res, 10));
    }
    m.launch();
    return { r: await run, events, targetEvents };
  } finally {
    await proxy?.close();
    await agent.close();
  }
}

/** Writes pages in every source file, at its first and last page and across its boundaries with the next. */
function guestWrites(r: Rig): () => void {
  return () => {
    for (const s of r.src) {
      scribble(s.path, 0);
      scribble(s.path, s.pages - 1);
      scribble(s.path, Math.floor(s.pages / 2));
    }
  };
}

test('two segments: one migration syncs both files, resuming after a cut connection, each target file equal to its source', { timeout: 90_000 }, async () => {
  const r = rig([['m0', 64], ['m1', 448]]);
  try {
    const x = await migrate(r, { proxy: (p) => p.cutAfter('up', 1700 * 1024, 'end'), whilePresync: guestWrites(r) });
    assert.equal(x.r.outcome, 'done', `${x.r.error?.code}: ${x.r.error?.message}`);
    const conns = x.events.filter((e) => e.event === 'connected') as Array<Extract<SourceEvent, { event: 'connected' }>>;
    assert.ok(conns.length >= 2, `the cut should have made the source reconnect (${conns.length} connections)`);
    const resumed = conns.find((c) => c.resume);
    assert.ok(resumed, 'the second connection resumed the image of two files');
    // The cut came after m0 (64 pages) and part of m1 had been sent: held pages of both files count.
    assert.ok(resumed.heldPages > 64 && resumed.heldPages < 512, `the target held ${resumed.heldPages} pages of the first connection, of both files`);
    sameFiles(r, (id) => r.dst.find((d) => d.id === id)!.path);
    for (const d of r.dst) {
      const meta = JSON.parse(readFileSync(metaPath(d.path), 'utf8')) as { state: string; segment: string; pageCount: number };
      assert.equal(meta.state, 'valid');
      assert.equal(meta.segment, d.id);
      assert.equal(meta.pageCount, r.src.find((s) => s.id === d.id)!.pages);
    }
    const verifies = x.targetEvents.filter((e) => e.event === 'verify');
    assert.ok(verifies.length >= 1 && verifies.every((e) => e.event === 'verify' && e.match), 'one verify of the whole image, matched');
  } finally {
    rmSync(r.dir, { recursive: true, force: true });
  }
});

test('three segments (one of a single page), the target listing its files in another order: every file synced by id', { timeout: 90_000 }, async () => {
  const r = rig([['node0', 64], ['node1', 1], ['node2', 191]]);
  try {
    const x = await migrate(r, { dst: [...r.dst].reverse(), whilePresync: guestWrites(r) });
    assert.equal(x.r.outcome, 'done', `${x.r.error?.code}: ${x.r.error?.message}`);
    sameFiles(r, (id) => r.dst.find((d) => d.id === id)!.path);
    const pauses = x.events.filter((e) => e.event === 'paused');
    assert.equal(pauses.length, 1, 'one pause for all three files');
  } finally {
    rmSync(r.dir, { recursive: true, force: true });
  }
});

test('damage to one target file while the guest is paused: the verify re-reads every file and finds exactly those pages; never done with a difference', { timeout: 90_000 }, async () => {
  const r = rig([['m0', 128], ['m1', 96], ['m2', 32]]);
  const victim = r.dst[1];
  const controller: GuestController = {
    ...new ImageOnlyController(),
    kind: 'image',
    pause: async () => tamper(victim.path, 96),
    resume: async () => undefined,
    commit: async () => undefined,
    release: async () => undefined,
    isAlive: () => true,
  };
  try {
    const x = await migrate(r, { controller });
    assert.ok(x.r.outcome === 'done' || x.r.outcome === 'rolled-back', `outcome ${x.r.outcome}`);
    if (x.r.outcome === 'done') sameFiles(r, (id) => r.dst.find((d) => d.id === id)!.path);
    const verify = x.targetEvents.find((e) => e.event === 'verify');
    assert.ok(verify && verify.event === 'verify' && !verify.match, 'the verify should have found the damaged file');
    assert.equal(verify.mismatches, 96, 'exactly the pages of the damaged file differ');
  } finally {
    rmSync(r.dir, { recursive: true, force: true });
  }
});

test('layouts the target does not have are refused with PRESYNC_ERR_GEOMETRY before any target file is written', { timeout: 90_000 }, async () => {
  const r = rig([['m0', 16], ['m1', 16]]);
  try {
    const cases: Array<{ what: string; o: Parameters<typeof migrate>[1]; files: string[]; says: RegExp }> = [
      { what: 'two files into a one-file target', o: { imagePath: join(r.dir, 'one.ram') }, files: [join(r.dir, 'one.ram')], says: /2 files \(m0, m1\), this target has one/ },
      {
        what: 'other ids',
        o: { dst: [{ id: 'm0', path: join(r.dir, 'a.ram') }, { id: 'mX', path: join(r.dir, 'b.ram') }] },
        files: [join(r.dir, 'a.ram'), join(r.dir, 'b.ram')],
        says: /same ids/,
      },
      {
        what: 'another size',
        o: { dst: [{ id: 'm0', path: join(r.dir, 'c.ram') }, { id: 'm1', path: join(r.dir, 'd.ram'), bytes: 32 * PAGE }] },
        files: [join(r.dir, 'c.ram'), join(r.dir, 'd.ram')],
        says: /segment "m1" is 65536 B on the source, 131072 B on the target/,
      },
      { what: 'one file into a two-file target', o: { srcSegments: false, dst: [{ id: 'm0', path: join(r.dir, 'e.ram') }, { id: 'm1', path: join(r.dir, 'f.ram') }] }, files: [join(r.dir, 'e.ram'), join(r.dir, 'f.ram')], says: /one file, this target has 2/ },
    ];
    for (const c of cases) {
      const x = await migrate(r, c.o);
      assert.equal(x.r.outcome, 'rolled-back', c.what);
      assert.equal(x.r.error?.code, 'PRESYNC_ERR_GEOMETRY', `${c.what}: ${x.r.error?.message}`);
      assert.match(x.r.error?.message ?? '', c.says, c.what);
      for (const f of c.files) assert.ok(!existsSync(f) && !existsSync(metaPath(f)), `${c.what}: ${f} was created`);
    }
  } finally {
    rmSync(r.dir, { recursive: true, force: true });
  }
});
