import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PresyncError } from '../../src/core/errors.ts';
import { Capability } from '../../src/wire/constants.ts';
import { FrameDecoder } from '../../src/wire/decoder.ts';
import { encodeFrame } from '../../src/wire/framing.ts';
import type { Frame } from '../../src/wire/frames.ts';
import {
  ClientHandshake,
  ServerHandshake,
  checkSecretStrength,
  computeClientProof,
  secretWeakness,
  errorFrame,
  type ClientHandshakeOptions,
  type HandshakeResult,
  type ServerHandshakeOptions,
} from '../../src/wire/handshake.ts';

const SECRET = Buffer.from('correct horse battery staple 42');
const geometry = { pageSize: 4096, pageCount: 1024 };
const clientOpts: ClientHandshakeOptions = { secret: SECRET, geometry, imageId: 'vm-7/ram', sessionId: 'mig-1' };

function expectError(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PresyncError, `expected PresyncError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

/** Sends frames through the real encoder and decoder, as a socket would. */
function wire(frames: Frame[]): Frame[] {
  const d = new FrameDecoder();
  return frames.flatMap((f) => d.push(encodeFrame(f)));
}

function run(c: ClientHandshake, s: ServerHandshake): { client: HandshakeResult; server: HandshakeResult; log: Frame[] } {
  const log: Frame[] = [];
  let toServer = wire(c.start().send);
  let client: HandshakeResult | undefined;
  let server: HandshakeResult | undefined;
  while (toServer.length > 0) {
    log.push(...toServer);
    const toClient: Frame[] = [];
    for (const f of toServer) {
      const step = s.receive(f);
      server ??= step.result;
      toClient.push(...wire(step.send));
    }
    toServer = [];
    for (const f of toClient) {
      log.push(f);
      const step = c.receive(f);
      client ??= step.result;
      toServer.push(...wire(step.send));
    }
  }
  assert.ok(client && server, 'handshake did not finish');
  return { client, server, log };
}

describe('handshake', () => {
  it('succeeds with a shared secret and agrees on geometry, identity and capabilities', () => {
    const s = new ServerHandshake({ secret: SECRET, capabilities: Capability.DEFLATE | Capability.RESUME });
    const c = new ClientHandshake({ ...clientOpts, capabilities: Capability.DEFLATE | Capability.LZ4 | Capability.RESUME });
    const { client, server, log } = run(c, s);
    assert.deepEqual(log.map((f) => f.type), ['hello', 'challenge', 'auth', 'welcome']);
    assert.deepEqual(client, server);
    assert.deepEqual(server.geometry, geometry);
    assert.equal(server.imageId, 'vm-7/ram');
    assert.equal(server.sessionId, 'mig-1');
    assert.equal(server.capabilities, Capability.DEFLATE | Capability.RESUME);
    assert.equal(server.resume, false);
  });

  it('the secret never crosses the wire', () => {
    const { log } = run(new ClientHandshake(clientOpts), new ServerHandshake({ secret: SECRET }));
    for (const f of log) assert.equal(encodeFrame(f).indexOf(SECRET), -1, f.type);
  });

  it('resumes only when the target holds the same image, of the same lineage, not handed over, with the same geometry', () => {
    const lineageId = 'ab'.repeat(16);
    const mine = { ...clientOpts, lineageId };
    const held: ServerHandshakeOptions = { secret: SECRET, geometry, heldImageId: 'vm-7/ram', heldLineageId: lineageId, heldState: 'syncing' };
    const r = run(new ClientHandshake(mine), new ServerHandshake(held));
    assert.equal(r.server.resume, true);
    assert.equal(r.server.lineageId, lineageId, 'the lineage travels in HELLO');
    assert.equal(run(new ClientHandshake(mine), new ServerHandshake({ ...held, heldImageId: 'other' })).server.resume, false);
    assert.equal(run(new ClientHandshake({ ...mine, lineageId: 'cd'.repeat(16) }), new ServerHandshake(held)).server.resume, false, 'another lineage');
    assert.equal(run(new ClientHandshake(clientOpts), new ServerHandshake(held)).server.resume, false, 'no lineage');
    assert.equal(run(new ClientHandshake(mine), new ServerHandshake({ ...held, heldState: 'valid' })).server.resume, false, 'handed over');
    const noResume = { ...mine, capabilities: Capability.DEFLATE };
    assert.equal(run(new ClientHandshake(noResume), new ServerHandshake(held)).client.resume, false);
    expectError(() => new ClientHandshake({ ...clientOpts, lineageId: 'not-hex' }), 'PRESYNC_ERR_BAD_ARGUMENT');
  });

  it('secrets with fewer than 16 bytes or fewer than 8 distinct byte values are weak', () => {
    assert.match(secretWeakness(new Uint8Array(15).map((_, i) => i)) ?? '', /15 bytes/);
    assert.match(secretWeakness(new Uint8Array(32)) ?? '', /1 distinct byte value/);
    assert.match(secretWeakness(Buffer.from('abcdefgabcdefgabcdefg')) ?? '', /7 distinct/);
    assert.equal(secretWeakness(Buffer.from('0123456789abcdef')), undefined);
    assert.equal(secretWeakness(SECRET), undefined);
    expectError(() => checkSecretStrength(new Uint8Array(16)), 'PRESYNC_ERR_BAD_ARGUMENT');
  });

  it('a client with the wrong secret rejects the server (AUTH) — and the server rejects it', () => {
    const s = new ServerHandshake({ secret: SECRET });
    const c = new ClientHandshake({ ...clientOpts, secret: Buffer.from('not the right secret at all') });
    expectError(() => run(c, s), 'PRESYNC_ERR_AUTH');
    // A client that skips checking the server and answers anyway still fails at the server.
    const s2 = new ServerHandshake({ secret: SECRET });
    const hello = new ClientHandshake(clientOpts).start().send[0];
    assert.equal(hello.type, 'hello');
    const [challenge] = wire(s2.receive(hello).send);
    assert.equal(challenge.type, 'challenge');
    if (hello.type !== 'hello' || challenge.type !== 'challenge') return;
    const forged = computeClientProof(Buffer.from('not the right secret at all'), hello, challenge);
    expectError(() => s2.receive({ type: 'auth', proof: forged }), 'PRESYNC_ERR_AUTH');
  });

  it('a server with the wrong secret is rejected by the client', () => {
    const s = new ServerHandshake({ secret: Buffer.from('an impostor target secret') });
    expectError(() => run(new ClientHandshake(clientOpts), s), 'PRESYNC_ERR_AUTH');
  });

  it('a replayed handshake fails against a fresh server nonce', () => {
    const { log } = run(new ClientHandshake(clientOpts), new ServerHandshake({ secret: SECRET }));
    const oldHello = log.find((f) => f.type === 'hello');
    const oldAuth = log.find((f) => f.type === 'auth');
    assert.ok(oldHello && oldAuth);
    const fresh = new ServerHandshake({ secret: SECRET });
    const reply = wire(fresh.receive(oldHello).send);
    assert.equal(reply[0].type, 'challenge');
    expectError(() => fresh.receive(oldAuth), 'PRESYNC_ERR_AUTH');
  });

  it('a tampered challenge (downgraded capabilities) is rejected', () => {
    const c = new ClientHandshake(clientOpts);
    const s = new ServerHandshake({ secret: SECRET });
    const [challenge] = wire(s.receive(c.start().send[0]).send);
    assert.equal(challenge.type, 'challenge');
    if (challenge.type !== 'challenge') return;
    expectError(() => c.receive({ ...challenge, capabilities: 0 }), 'PRESYNC_ERR_AUTH');
  });

  it('a server reflecting the client nonce is rejected', () => {
    const nonce = new Uint8Array(32).fill(9);
    const c = new ClientHandshake({ ...clientOpts, nonce });
    const s = new ServerHandshake({ secret: SECRET, nonce });
    expectError(() => c.receive(s.receive(c.start().send[0]).send[0]), 'PRESYNC_ERR_AUTH');
  });

  it('a geometry mismatch is GEOMETRY on the client, and on the server if the client ignores it', () => {
    const other = { pageSize: 4096, pageCount: 2048 };
    expectError(() => run(new ClientHandshake(clientOpts), new ServerHandshake({ secret: SECRET, geometry: other })), 'PRESYNC_ERR_GEOMETRY');
    const s = new ServerHandshake({ secret: SECRET, geometry: other });
    const hello = new ClientHandshake(clientOpts).start().send[0];
    const challenge = s.receive(hello).send[0];
    if (hello.type !== 'hello' || challenge.type !== 'challenge') assert.fail('unexpected frames');
    expectError(() => s.receive({ type: 'auth', proof: computeClientProof(SECRET, hello, challenge) }), 'PRESYNC_ERR_GEOMETRY');
  });

  it('a wrong protocol version in HELLO is VERSION', () => {
    const hello = new ClientHandshake(clientOpts).start().send[0];
    if (hello.type !== 'hello') assert.fail('not hello');
    expectError(() => new ServerHandshake({ secret: SECRET }).receive({ ...hello, version: 2 }), 'PRESYNC_ERR_VERSION');
  });

  it('frames out of order are PROTOCOL; a peer ERROR frame surfaces with its code', () => {
    expectError(() => new ServerHandshake({ secret: SECRET }).receive({ type: 'ping', nonce: 1n }), 'PRESYNC_ERR_PROTOCOL');
    const c = new ClientHandshake(clientOpts);
    c.start();
    const refusal = wire([errorFrame(new PresyncError('PRESYNC_ERR_BUSY', 'target is migrating another guest'))])[0];
    expectError(() => c.receive(refusal), 'PRESYNC_ERR_BUSY');
    expectError(() => c.receive({ type: 'welcome', capabilities: 0, resume: false }), 'PRESYNC_ERR_PROTOCOL');
  });

  it('refuses short secrets and over-long identities at construction', () => {
    expectError(() => new ServerHandshake({ secret: Buffer.from('short') }), 'PRESYNC_ERR_BAD_ARGUMENT');
    expectError(() => new ClientHandshake({ ...clientOpts, imageId: 'x'.repeat(300) }), 'PRESYNC_ERR_BAD_ARGUMENT');
  });

  it('errorFrame bounds the message and keeps the code', () => {
    const f = errorFrame(new PresyncError('PRESYNC_ERR_AUTH', 'é'.repeat(2000)));
    assert.equal(f.code, 'PRESYNC_ERR_AUTH');
    assert.ok(Buffer.byteLength(f.message) <= 1024);
    assert.equal(wire([f]).length, 1);
    assert.equal(errorFrame(new Error('boom')).code, 'PRESYNC_ERR_INTERNAL');
  });
});

describe('handshake: an image of several files (segment layout)', () => {
  const segments = [
    { id: 'm0', pageCount: 1000 },
    { id: 'm1', pageCount: 24 },
  ];

  it('the layout travels in HELLO (SEGMENTS bit), the target grants it, both results carry it', () => {
    const { client, server, log } = run(new ClientHandshake({ ...clientOpts, segments }), new ServerHandshake({ secret: SECRET }));
    const hello = log[0];
    assert.ok(hello.type === 'hello' && (hello.capabilities & Capability.SEGMENTS) !== 0);
    assert.deepEqual(server.segments, segments);
    assert.deepEqual(client.segments, segments);
    assert.ok((server.capabilities & Capability.SEGMENTS) !== 0);
    assert.deepEqual(client, server);
  });

  it('a one-file image sends no layout and no SEGMENTS bit (wire-compatible with older targets)', () => {
    const { server, log } = run(new ClientHandshake({ ...clientOpts, capabilities: Capability.RESUME | Capability.SEGMENTS }), new ServerHandshake({ secret: SECRET }));
    const hello = log[0];
    assert.ok(hello.type === 'hello' && (hello.capabilities & Capability.SEGMENTS) === 0 && hello.segments === undefined);
    assert.equal(server.segments, undefined);
    assert.equal(server.capabilities & Capability.SEGMENTS, 0);
  });

  it('a target that does not grant SEGMENTS is refused by the source with VERSION (it would write one file)', () => {
    const c = new ClientHandshake({ ...clientOpts, segments });
    const s = new ServerHandshake({ secret: SECRET, capabilities: Capability.RESUME });
    assert.throws(() => run(c, s), (e: unknown) => e instanceof PresyncError && e.code === 'PRESYNC_ERR_VERSION' && /several files/.test(e.message));
  });

  it('a layout not adding up to the image is refused before anything is sent', () => {
    expectError(() => new ClientHandshake({ ...clientOpts, segments: [{ id: 'm0', pageCount: 1000 }] }), 'PRESYNC_ERR_BAD_ARGUMENT');
    expectError(() => new ClientHandshake({ ...clientOpts, segments: [{ id: 'm0', pageCount: 1000 }, { id: 'm0', pageCount: 24 }] }), 'PRESYNC_ERR_BAD_ARGUMENT');
  });

  it('the layout is covered by the proofs: a HELLO whose layout was altered in flight fails AUTH', () => {
    const c = new ClientHandshake({ ...clientOpts, segments });
    const s = new ServerHandshake({ secret: SECRET });
    const [hello] = wire(c.start().send);
    assert.ok(hello.type === 'hello');
    const altered = { ...hello, segments: [{ id: 'm0', pageCount: 24 }, { id: 'm1', pageCount: 1000 }] };
    const challenge = wire(s.receive(altered).send);
    assert.throws(() => c.receive(challenge[0]), (e: unknown) => e instanceof PresyncError && e.code === 'PRESYNC_ERR_AUTH');
  });

  it('a 32-segment layout with 64-byte ids fits the 4 KiB handshake frame limit', () => {
    const big = Array.from({ length: 32 }, (_, i) => ({ id: `m${String(i).padStart(63, '0')}`, pageCount: 32 }));
    const c = new ClientHandshake({ ...clientOpts, segments: big, lineageId: 'ab'.repeat(16) });
    const [hello] = c.start().send;
    assert.ok(encodeFrame(hello).length <= 4096, `${encodeFrame(hello).length} B`);
    const { server } = run(new ClientHandshake({ ...clientOpts, segments: big }), new ServerHandshake({ secret: SECRET }));
    assert.deepEqual(server.segments, big);
  });
});

