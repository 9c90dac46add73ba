import assert from 'node:assert/strict';
import diagnostics_channel from 'node:diagnostics_channel';
import { before, describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import type { HandshakeFailedEvent } from '../../src/transport/events.ts';
import { createThrowawayPki, opensslAvailable, type ThrowawayPki } from '../../src/transport/throwaway-pki.ts';
import { TlsTransport } from '../../src/transport/tls.ts';
import type { Connection } from '../../src/transport/types.ts';
import { readAll } from './transport-fixtures.ts';

const LOOPBACK = { host: '127.0.0.1', port: 0 };

/** Dials and exchanges one message; resolves with the reply or rejects with the failure. */
async function roundTrip(client: TlsTransport, port: number): Promise<string> {
  const c = await client.dial({ host: '127.0.0.1', port }, { timeoutMs: 5000 });
  await c.write(Buffer.from('ping'));
  await c.closeWrite();
  const reply = await readAll(c);
  await c.close();
  if (reply.length === 0) throw new Error('no reply');
  return reply.toString();
}

function failedWith(...codes: string[]) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof PresyncError, String(e));
    assert.ok(codes.includes(e.code), `${e.code}: ${e.message}`);
    return true;
  };
}

describe('tls transport', { skip: opensslAvailable() ? false : 'openssl CLI not available' }, () => {
  let pki: ThrowawayPki;
  let rogue: ThrowawayPki;
  before(async () => {
    [pki, rogue] = await Promise.all([createThrowawayPki(), createThrowawayPki()]);
  });

  async function echoServer(opts: ConstructorParameters<typeof TlsTransport>[0]) {
    const accepted: Connection[] = [];
    const failures: HandshakeFailedEvent[] = [];
    const onFail = (m: unknown): void => void failures.push(m as HandshakeFailedEvent);
    diagnostics_channel.subscribe('presync:transport:handshake-failed', onFail);
    const l = await new TlsTransport(opts).listen(LOOPBACK, async (c) => {
      accepted.push(c);
      const q = await readAll(c);
      await c.write(Buffer.from(`pong:${q.toString()}`));
      await c.close();
    });
    return {
      port: l.address.port,
      accepted,
      failures,
      close: async () => {
        diagnostics_channel.unsubscribe('presync:transport:handshake-failed', onFail);
        await l.close({ destroyConnections: true });
      },
    };
  }

  it('mutual TLS: a client with a certificate from the shared CA gets through', async () => {
    const s = await echoServer({ ...pki.server, ca: pki.ca.cert });
    const reply = await roundTrip(new TlsTransport({ ...pki.client, ca: pki.ca.cert }), s.port);
    assert.equal(reply, 'pong:ping');
    await s.close();
  });

  it('mutual TLS: a client without a certificate is refused and never reaches the handler', async () => {
    const s = await echoServer({ ...pki.server, ca: pki.ca.cert });
    await assert.rejects(roundTrip(new TlsTransport({ ca: pki.ca.cert }), s.port), (e: unknown) =>
      e instanceof PresyncError ? failedWith(ErrorCodes.AUTH, ErrorCodes.CONNECTION)(e) : true,
    );
    assert.equal(s.accepted.length, 0);
    await s.close();
  });

  it('mutual TLS: a client certificate from another CA is refused', async () => {
    const s = await echoServer({ ...pki.server, ca: pki.ca.cert });
    await assert.rejects(roundTrip(new TlsTransport({ ...rogue.client, ca: pki.ca.cert }), s.port), (e: unknown) =>
      e instanceof PresyncError ? failedWith(ErrorCodes.AUTH, ErrorCodes.CONNECTION)(e) : true,
    );
    assert.equal(s.accepted.length, 0);
    assert.ok(s.failures.some((f) => /client certificate rejected/.test(f.errorMessage)), JSON.stringify(s.failures));
    await s.close();
  });

  it('a client refuses a server its CA did not sign, with PRESYNC_ERR_AUTH at dial', async () => {
    const s = await echoServer({ ...rogue.server });
    await assert.rejects(new TlsTransport({ ca: pki.ca.cert }).dial({ host: '127.0.0.1', port: s.port }), failedWith(ErrorCodes.AUTH));
    await s.close();
  });

  it('a client checks the server name: a cert for 127.0.0.1 does not pass for another name', async () => {
    const s = await echoServer({ ...pki.server });
    await assert.rejects(
      new TlsTransport({ ca: pki.ca.cert, servername: 'elsewhere.example' }).dial({ host: '127.0.0.1', port: s.port }),
      failedWith(ErrorCodes.AUTH),
    );
    await s.close();
  });

  it('without a CA on the listener, clients need no certificate', async () => {
    const s = await echoServer({ ...pki.server });
    assert.equal(await roundTrip(new TlsTransport({ ca: pki.ca.cert }), s.port), 'pong:ping');
    await s.close();
  });

  it('rejects incomplete options with PRESYNC_ERR_BAD_ARGUMENT', async () => {
    const bad = (e: unknown): boolean => e instanceof PresyncError && e.code === ErrorCodes.BAD_ARGUMENT;
    assert.throws(() => new TlsTransport({ cert: pki.server.cert }), bad);
    await assert.rejects(new TlsTransport({ ca: pki.ca.cert }).listen(LOOPBACK, () => undefined), bad);
    await assert.rejects(new TlsTransport({ cert: 'not a pem', key: 'nope' }).listen(LOOPBACK, () => undefined), bad);
  });
});
