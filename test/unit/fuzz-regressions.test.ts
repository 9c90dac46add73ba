import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FrameDecoder } from '../../src/wire/decoder.ts';
import type { Frame } from '../../src/wire/frames.ts';
import { encodeFrame } from '../../src/wire/framing.ts';
import { ClientHandshake, ServerHandshake } from '../../src/wire/handshake.ts';

/** Counterexamples the fuzzer found, kept as plain tests once fixed. */

function overTheWire(f: Frame): Frame {
  const out = new FrameDecoder().push(encodeFrame(f));
  assert.equal(out.length, 1);
  return out[0];
}

describe('fuzz regressions', () => {
  it('a string starting with U+FEFF keeps it: decoding is lossless (TextDecoder drops a BOM by default)', () => {
    const hello: Frame = {
      type: 'hello',
      version: 1,
      capabilities: 0,
      pageSize: 512,
      pageCount: 1,
      imageId: '\uFEFFimage',
      sessionId: '\uFEFF',
      nonce: new Uint8Array(32),
    };
    const back = overTheWire(hello);
    assert.equal(back.type, 'hello');
    assert.equal(back.type === 'hello' && back.imageId, '\uFEFFimage');
    assert.equal(back.type === 'hello' && back.sessionId, '\uFEFF');
    assert.ok(Buffer.from(encodeFrame(back)).equals(Buffer.from(encodeFrame(hello))));
  });

  it('a source whose image identity starts with U+FEFF authenticates over the wire (proofs cover re-encoded frames)', () => {
    const secret = new Uint8Array(32).fill(9);
    const client = new ClientHandshake({ secret, geometry: { pageSize: 4096, pageCount: 8 }, imageId: '\uFEFFvm', sessionId: 's' });
    const server = new ServerHandshake({ secret });
    const c1 = client.receive(overTheWire(server.receive(overTheWire(client.start().send[0])).send[0]));
    const s2 = server.receive(overTheWire(c1.send[0]));
    assert.equal(s2.result?.imageId, '\uFEFFvm');
    assert.equal(client.receive(overTheWire(s2.send[0])).result?.imageId, '\uFEFFvm');
  });
});
