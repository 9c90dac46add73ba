/**
 * Hostile peers against a real target agent over TCP on 127.0.0.1. Each one
 * gets an ERROR frame with a stable code (or, if it stays silent, is closed),
 * nothing is written to the target image, and the agent then serves a normal
 * migration.
 *
 * Elsewhere: the wire decoder and handshakes are fuzzed in
 * test/unit/fuzz-*.test.ts; corrupted bytes inside a live migration are the
 * `corrupt-wire` case of the fault matrix (test/e2e/faults-matrix.test.ts).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes } from '../../src/core/errors.ts';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController } from '../../src/guest/controller.ts';
import { metaPath } from '../../src/guest/target-image.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import type { TargetEvent } from '../../src/engine/target-session.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import type { TransportAddress } from '../../src/transport/types.ts';
import { crc32 } from '../../src/wire/crc32.ts';
import { FrameDecoder } from '../../src/wire/decoder.ts';
import { digestPage, initDigest } from '../../src/native/page-digest.ts';
import { verifySummary } from '../../src/wire/digest-runs.ts';
import { encodeFrame } from '../../src/wire/framing.ts';
import type { ChallengeFrame, Frame, HelloFrame } from '../../src/wire/frames.ts';
import { ClientHandshake, computeClientProof } from '../../src/wire/handshake.ts';
import { encodePage, pagesFrame } from '../../src/wire/pages.ts';
import { scratchDir } from '../helpers/scratch.ts';

const SECRET = Buffer.from('hostile-peer-secret-0123456789ab');
const PAGE = 4096;
const PAGES = 256;
const KNOWN = new Set<string>(Object.values(ErrorCodes));
/** One lineage for every peer here: with --force the agent resumes its handed-over image, so an authenticated peer's failure leaves its bytes alone. */
const LINEAGE = 'c0ffee'.padEnd(32, '0');

/** A raw TCP peer that writes whatever it is told and decodes what the agent answers. */
class RawPeer {
  private readonly decoder = new FrameDecoder();
  private readonly frames: Frame[] = [];
  private waiters: Array<() => void> = [];
  decodeError: Error | undefined;
  readonly closed: Promise<void>;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      try {
        this.frames.push(...this.decoder.push(new Uint8Array(d)));
      } catch (e) {
        this.decodeError = e as Error;
      }
      this.wake();
    });
    sock.on('error', () => undefined);
    this.closed = new Promise((r) => sock.once('close', () => r()));
    void this.closed.then(() => this.wake());
  }

  static connect(a: TransportAddress): Promise<RawPeer> {
    return new Promise((res, rej) => {
      const s = net.connect({ host: a.host, port: a.port }, () => res(new RawPeer(s)));
      s.once('error', rej);
    });
  }

  private wake(): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  write(b: Uint8Array | Frame): void {
    this.sock.write(b instanceof Uint8Array ? b : encodeFrame(b));
  }

  /** The next frame, or null once the agent closed the connection with nothing more to say. */
  async next(timeoutMs = 10_000): Promise<Frame | null> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.shift();
      if (f) return f;
      if (this.sock.destroyed || this.sock.readableEnded) return null;
      if (Date.now() > end) throw new Error('the agent neither answered nor closed');
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  /** Reads until the agent's ERROR frame; returns its code. */
  async errorCode(): Promise<string> {
    for (;;) {
      const f = await this.next();
      if (f === null) throw new Error('closed without an ERROR frame');
      if (f.type === 'error') return f.code;
    }
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/** Bytes of the target image and its sidecar, to prove nothing was written. */
function snapshot(path: string): { image: Buffer | null; meta: string | null } {
  return { image: existsSync(path) ? readFileSync(path) : null, meta: existsSync(metaPath(path)) ? readFileSync(metaPath(path), 'utf8') : null };
}

function assertUntouched(before: ReturnType<typeof snapshot>, path: string, what: string): void {
  const now = snapshot(path);
  assert.ok(before.image === null ? now.image === null : now.image !== null && before.image.equals(now.image), `${what}: target image bytes unchanged`);
  assert.equal(now.meta, before.meta, `${what}: sidecar untouched`);
}

/**
 * The agent refused the peer with `code`: its session ended with that code,
 * the peer got an ERROR frame carrying it, and the connection is closed.
 */
async function refused(peer: RawPeer, code: string | ((c: string) => boolean), what: string): Promise<string> {
  const seen = ends.length;
  let frameCode: string | undefined;
  for (;;) {
    const f = await peer.next();
    if (f === null) break;
    if (f.type === 'error') frameCode ??= f.code;
  }
  await peer.closed;
  for (let i = 0; i < 500 && ends.length === seen; i++) await new Promise((r) => setTimeout(r, 10));
  const end = ends.at(-1);
  const got = end?.error?.code ?? 'none';
  const ok = typeof code === 'string' ? got === code : code(got);
  assert.ok(ok, `${what}: the agent ended the session with ${got}`);
  assert.equal(frameCode, got, `${what}: the peer was told why, with the session's code`);
  return got;
}

let dir: string;
let src: string;
let dst: string;
let agent: TargetAgent;
let imageId: string;
const ends: Array<Extract<TargetEvent, { event: 'session-end' }>> = [];
let hookCalls = 0;

async function normalMigration(what: string): Promise<void> {
  const m = new SourceMigration({
    transport: new TcpTransport(),
    to: agent.address,
    secret: SECRET,
    imagePath: src,
    imageId,
    lineageId: LINEAGE,
    policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: PAGES }, seed: 1 }),
    controller: new ImageOnlyController(),
    epochMs: 20,
  });
  setTimeout(() => m.launch(), 150);
  const r = await m.run();
  assert.equal(r.outcome, 'done', `${what}: the agent still serves a normal migration: ${JSON.stringify(r.error)}`);
  assert.ok(readFileSync(src).equals(readFileSync(dst)), `${what}: the normal migration is byte-identical`);
}

/** HELLO → CHALLENGE by hand; returns the peer, our HELLO and the agent's CHALLENGE. */
async function helloChallenge(o: { pageCount?: number; id?: string } = {}): Promise<{ peer: RawPeer; hello: HelloFrame; challenge: ChallengeFrame; hs: ClientHandshake }> {
  const hs = new ClientHandshake({ secret: SECRET, geometry: { pageSize: PAGE, pageCount: o.pageCount ?? PAGES }, imageId: o.id ?? imageId, sessionId: randomBytes(8).toString('hex'), lineageId: LINEAGE });
  const peer = await RawPeer.connect(agent.address);
  const hello = hs.start().send[0] as HelloFrame;
  peer.write(hello);
  const challenge = await peer.next();
  assert.ok(challenge && challenge.type === 'challenge', `expected CHALLENGE, got ${challenge?.type}`);
  return { peer, hello, challenge, hs };
}

/** A full, valid handshake driven by hand; the peer is then an authenticated source. */
async function authenticated(): Promise<RawPeer> {
  const { peer, hs, challenge } = await helloChallenge();
  for (const f of hs.receive(challenge).send) peer.write(f);
  const welcome = await peer.next();
  assert.ok(welcome && welcome.type === 'welcome', `expected WELCOME, got ${welcome?.type}`);
  return peer;
}

before(async () => {
  await initDigest();
  dir = scratchDir('presync-hostile-');
  src = join(dir, 'source.img');
  dst = join(dir, 'target.img');
  const img = randomBytes(PAGES * PAGE);
  img.fill(0, 10 * PAGE, 20 * PAGE);
  writeFileSync(src, img);
  imageId = 'hostile-guest';
  agent = await TargetAgent.start({
    transport: new TcpTransport(),
    listen: { host: '127.0.0.1', port: 0 },
    imagePath: dst,
    secret: SECRET,
    handshakeTimeoutMs: 400,
    // Each check ends with a normal migration into the same, handed-over image.
    force: true,
    hook: {
      start: async () => {
        hookCalls++;
      },
    },
    onEvent: (e) => {
      if (e.event === 'session-end') ends.push(e);
    },
  });
  // The target holds a valid, handed-over image: every hostile peer below must leave it exactly so.
  await normalMigration('set-up');
});

after(async () => {
  await agent.close();
});

test('an oversized frame is refused with PRESYNC_ERR_FRAME_TOO_LARGE before it is buffered', async () => {
  const before = snapshot(dst);
  const peer = await RawPeer.connect(agent.address);
  const h = encodeFrame({ type: 'ping', nonce: 1n });
  h.writeUInt32LE(64 * 1024 * 1024, 4); // announce 64 MiB
  h.writeUInt32LE(crc32(h.subarray(0, 12)), 12);
  peer.write(h.subarray(0, 16));
  await refused(peer, ErrorCodes.FRAME_TOO_LARGE, 'oversized');
  assertUntouched(before, dst, 'oversized');
  await normalMigration('after an oversized frame');
});

test('a page index out of range from an authenticated source: PRESYNC_ERR_PAGE_RANGE, no page written', async () => {
  const before = snapshot(dst);
  const peer = await authenticated();
  const good = encodePage(3, Buffer.alloc(PAGE, 1), { pageSize: PAGE });
  const bad = encodePage(PAGES, Buffer.alloc(PAGE, 2), { pageSize: PAGE });
  // A valid page first in the same batch: a batch is all or nothing.
  peer.write(pagesFrame(1, [good, bad]));
  await refused(peer, ErrorCodes.PAGE_RANGE, 'page range');
  const now = snapshot(dst);
  assert.ok(before.image && now.image && before.image.equals(now.image), 'no page of the batch was written');
  // The session had opened the image for writing; it is left marked unusable, never valid.
  assert.equal((JSON.parse(now.meta!) as { state: string }).state, 'invalid');
  assert.equal(ends.at(-1)?.pagesWritten, 0);
  await normalMigration('after a page out of range');
});

test('a geometry mismatch is refused with PRESYNC_ERR_GEOMETRY at AUTH, before the image is opened', async () => {
  const before = snapshot(dst);
  const { peer, hello, challenge } = await helloChallenge({ pageCount: PAGES * 2 });
  assert.equal(challenge.pageCount, PAGES, 'the agent announces the geometry it holds');
  // A source that ignores the announced geometry and authenticates anyway.
  peer.write({ type: 'auth', proof: computeClientProof(SECRET, hello, challenge) });
  assert.equal(await peer.errorCode(), ErrorCodes.GEOMETRY);
  await peer.closed;
  assertUntouched(before, dst, 'geometry');
  await normalMigration('after a geometry mismatch');
});

test('a wrong protocol version (frame header or HELLO) is refused with PRESYNC_ERR_VERSION', async () => {
  const before = snapshot(dst);
  const hs = new ClientHandshake({ secret: SECRET, geometry: { pageSize: PAGE, pageCount: PAGES }, imageId, sessionId: 'v', lineageId: LINEAGE });
  const hello = hs.start().send[0] as HelloFrame;
  const inHeader = encodeFrame(hello);
  inHeader.writeUInt8(2, 0);
  inHeader.writeUInt32LE(crc32(inHeader.subarray(0, 12)), 12);
  const p1 = await RawPeer.connect(agent.address);
  p1.write(inHeader);
  await refused(p1, ErrorCodes.VERSION, 'version in the header');
  const p2 = await RawPeer.connect(agent.address);
  p2.write({ ...hello, version: 2 });
  assert.equal(await p2.errorCode(), ErrorCodes.VERSION);
  await p2.closed;
  assertUntouched(before, dst, 'version');
  await normalMigration('after a wrong version');
});

test('a wrong secret is refused with PRESYNC_ERR_AUTH', async () => {
  const before = snapshot(dst);
  const { peer, hello, challenge } = await helloChallenge();
  peer.write({ type: 'auth', proof: computeClientProof(Buffer.from('not-the-secret-0123456789abcdef!'), hello, challenge) });
  assert.equal(await peer.errorCode(), ErrorCodes.AUTH);
  await peer.closed;
  assertUntouched(before, dst, 'secret');
  await normalMigration('after a wrong secret');
});

test("a replayed handshake (a real source's HELLO and AUTH, recorded and sent again) is refused with PRESYNC_ERR_AUTH", async () => {
  // Record a genuine handshake off the wire.
  const { peer: real, hello, challenge, hs } = await helloChallenge();
  const auth = hs.receive(challenge).send[0]!;
  real.write(auth);
  const welcome = await real.next();
  assert.equal(welcome?.type, 'welcome');
  real.write({ type: 'abort', reason: 'recording only' });
  await real.closed;
  const before = snapshot(dst);
  // Replay both on a new connection: the agent's fresh nonce makes the recorded proof worthless.
  const replay = await RawPeer.connect(agent.address);
  replay.write(hello);
  const c2 = await replay.next();
  assert.equal(c2?.type, 'challenge');
  replay.write(auth);
  assert.equal(await replay.errorCode(), ErrorCodes.AUTH);
  await replay.closed;
  assertUntouched(before, dst, 'replay');
  await normalMigration('after a replayed handshake');
});

test('garbage bytes are refused with a stable code and never taken for a frame', async () => {
  const before = snapshot(dst);
  for (const junk of [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), randomBytes(4096), Buffer.alloc(64, 0)]) {
    const peer = await RawPeer.connect(agent.address);
    peer.write(junk);
    await refused(peer, (c) => KNOWN.has(c) && c !== ErrorCodes.INTERNAL, 'garbage');
  }
  assertUntouched(before, dst, 'garbage');
  await normalMigration('after garbage');
});

test('a silent peer is closed once the handshake timeout passes', async () => {
  const before = snapshot(dst);
  const peer = await RawPeer.connect(agent.address);
  // The agent runs with handshakeTimeoutMs 400: it hangs up without waiting for us.
  assert.equal(await peer.next(15_000), null);
  await peer.closed;
  assertUntouched(before, dst, 'silence');
  await normalMigration('after a silent peer');
});

test('HANDOVER without a verify is refused with PRESYNC_ERR_VERIFY; the guest is not started', async () => {
  const before = snapshot(dst);
  const calls = hookCalls;
  const peer = await authenticated();
  peer.write({ type: 'phase', phase: 'handover' });
  peer.write({ type: 'handover' });
  assert.equal(await peer.errorCode(), ErrorCodes.VERIFY);
  await peer.closed;
  assert.equal(hookCalls, calls, 'the handover hook never ran');
  const now = snapshot(dst);
  assert.ok(before.image && now.image && before.image.equals(now.image), 'image bytes unchanged');
  assert.equal((JSON.parse(now.meta!) as { state: string }).state, 'invalid', 'the image is not left valid for anyone to start');
  // Straight to HANDOVER, without even the phase: refused as a protocol error.
  const p2 = await authenticated();
  p2.write({ type: 'handover' });
  assert.equal(await p2.errorCode(), ErrorCodes.PROTOCOL);
  await p2.closed;
  assert.equal(hookCalls, calls);
  await normalMigration('after HANDOVER without verify');
});

test('VERIFY_SUMMARY: a summary of the image the target holds matches; a forged one does not, and HANDOVER after it is refused', async () => {
  await normalMigration('before the summary check');
  const img = readFileSync(src);
  const table = new BigUint64Array(PAGES);
  for (let p = 0; p < PAGES; p++) table[p] = digestPage(img.subarray(p * PAGE, (p + 1) * PAGE));
  const calls = hookCalls;
  const peer = await authenticated();
  // The agent offers a resume (this image is valid here): it lists what it holds first.
  let f = await peer.next();
  while (f?.type === 'have' && !f.final) f = await peer.next();
  assert.equal(f?.type, 'have');
  peer.write(verifySummary(table));
  const ok = await peer.next();
  assert.deepEqual(ok, { type: 'verify-summary-response', match: true });
  table[PAGES - 1] ^= 1n;
  peer.write(verifySummary(table));
  const bad = await peer.next();
  assert.deepEqual(bad, { type: 'verify-summary-response', match: false });
  peer.write({ type: 'phase', phase: 'handover' });
  peer.write({ type: 'handover' });
  assert.equal(await peer.errorCode(), ErrorCodes.VERIFY);
  await peer.closed;
  assert.equal(hookCalls, calls, 'the handover hook never ran');
  await normalMigration('after a forged verify summary');
});

test('hostile image identities to an --image-dir agent create nothing, inside the directory or out', async () => {
  const root = scratchDir('presync-hostile-dir-');
  const imageDir = join(root, 'images');
  const a2 = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imageDir, secret: SECRET, handshakeTimeoutMs: 2000 });
  try {
    const passwd = readFileSync('/etc/passwd');
    for (const id of ['../../etc/passwd', '../escape', 'a/b', '.hidden', 'x\0y', '..', '/abs']) {
      const hs = new ClientHandshake({ secret: SECRET, geometry: { pageSize: PAGE, pageCount: PAGES }, imageId: id, sessionId: 's' });
      const peer = await RawPeer.connect(a2.address);
      peer.write(hs.start().send[0]!);
      assert.equal(await peer.errorCode(), ErrorCodes.BAD_ARGUMENT, JSON.stringify(id));
      await peer.closed;
    }
    assert.deepEqual(readdirSync(imageDir), [], 'nothing created in the image directory');
    assert.deepEqual(readdirSync(root), ['images'], 'nothing created beside it');
    assert.ok(readFileSync('/etc/passwd').equals(passwd));
    // And it still serves a well-named image.
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: a2.address,
      secret: SECRET,
      imagePath: src,
      imageId: 'well-named',
      policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: PAGES }, seed: 1 }),
      controller: new ImageOnlyController(),
      epochMs: 20,
    });
    setTimeout(() => m.launch(), 150);
    assert.equal((await m.run()).outcome, 'done');
    assert.deepEqual(readdirSync(imageDir).sort(), ['well-named.img', 'well-named.img.presync']);
  } finally {
    await a2.close();
  }
});

test(
  'a frame the decoder rejects (oversized, page out of range, bad header, garbage) reaches the peer as an ERROR frame',
  { timeout: 30_000 },
  async () => {
    const peer = await RawPeer.connect(agent.address);
    const h = encodeFrame({ type: 'ping', nonce: 1n });
    h.writeUInt32LE(64 * 1024 * 1024, 4);
    h.writeUInt32LE(crc32(h.subarray(0, 12)), 12);
    peer.write(h.subarray(0, 16));
    assert.equal(await peer.errorCode(), ErrorCodes.FRAME_TOO_LARGE);
    const p2 = await RawPeer.connect(agent.address);
    p2.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    const code = await p2.errorCode();
    assert.ok(KNOWN.has(code));
  },
);
