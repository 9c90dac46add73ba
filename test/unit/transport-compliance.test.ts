/**
 * One compliance suite, run against every transport: whatever the engine
 * relies on must hold for all of them.
 */
import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { MemoryNetwork, MemoryTransport } from '../../src/transport/memory.ts';
import { ShapedTransport } from '../../src/transport/shaper.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { createThrowawayPki, opensslAvailable, type ThrowawayPki } from '../../src/transport/throwaway-pki.ts';
import { TlsTransport } from '../../src/transport/tls.ts';
import type { Connection, Listener, Transport, TransportAddress } from '../../src/transport/types.ts';
import {
  hashAll,
  isPending,
  patternChunk,
  readAll,
  silentTcpServer,
  sleep,
  unresponsiveTcpAddress,
} from './transport-fixtures.ts';

const HWM = 64 * 1024;

interface Setup {
  /** Transport the listener uses. */
  readonly server: Transport;
  /** Transport the dialer uses. */
  readonly client: Transport;
  readonly listenAt: TransportAddress;
  /** An address where dialing hangs (for the timeout test). */
  unresponsive(): Promise<{ client: Transport; address: TransportAddress; cleanup: () => Promise<void> }>;
}

interface Subject {
  readonly name: string;
  readonly skip?: string | false;
  make(): Promise<Setup>;
}

let pki: ThrowawayPki | undefined;

const subjects: Subject[] = [
  {
    name: 'memory',
    async make() {
      const network = new MemoryNetwork();
      const t = new MemoryTransport({ network, highWaterMark: HWM });
      return {
        server: t,
        client: t,
        listenAt: { host: 'memory', port: 0 },
        async unresponsive() {
          const l = await t.listen({ host: 'memory', port: 0 }, (c) => c.destroy());
          return {
            client: new MemoryTransport({ network, connectDelayMs: 60_000 }),
            address: l.address,
            cleanup: () => l.close(),
          };
        },
      };
    },
  },
  {
    name: 'tcp',
    async make() {
      const t = new TcpTransport({ highWaterMark: HWM });
      return {
        server: t,
        client: t,
        listenAt: { host: '127.0.0.1', port: 0 },
        async unresponsive() {
          const u = await unresponsiveTcpAddress();
          return { client: t, ...u };
        },
      };
    },
  },
  {
    name: 'tls (mutual)',
    skip: opensslAvailable() ? false : 'openssl CLI not available to make test certificates',
    async make() {
      pki ??= await createThrowawayPki();
      const server = new TlsTransport({ ...pki.server, ca: pki.ca.cert, highWaterMark: HWM });
      const client = new TlsTransport({ ...pki.client, ca: pki.ca.cert, highWaterMark: HWM });
      return {
        server,
        client,
        listenAt: { host: '127.0.0.1', port: 0 },
        async unresponsive() {
          const u = await silentTcpServer();
          return { client, ...u };
        },
      };
    },
  },
  {
    name: 'shaped(tcp)',
    async make() {
      // Fast enough to keep the suite quick, slow enough that the bucket really paces.
      const t = new ShapedTransport(new TcpTransport({ highWaterMark: HWM }), { rate: '4gbit' });
      return {
        server: t,
        client: t,
        listenAt: { host: '127.0.0.1', port: 0 },
        async unresponsive() {
          const u = await unresponsiveTcpAddress();
          return { client: t, ...u };
        },
      };
    },
  },
];

/** Listens, dials once, and returns both ends. */
async function pair(s: Setup): Promise<{ listener: Listener; client: Connection; server: Connection }> {
  let accept!: (c: Connection) => void;
  const accepted = new Promise<Connection>((r) => (accept = r));
  const listener = await s.server.listen(s.listenAt, (c) => accept(c));
  const client = await s.client.dial(listener.address, { timeoutMs: 10_000 });
  const server = await accepted;
  return { listener, client, server };
}

function assertCode(code: string) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof PresyncError, `expected a PresyncError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  };
}

for (const subject of subjects) {
  describe(`transport compliance: ${subject.name}`, { skip: subject.skip ?? false }, () => {
    let s: Setup;
    before(async () => {
      s = await subject.make();
    });
    it('binds port 0 to a real port and reports it', async () => {
      const l = await s.server.listen(s.listenAt, (c) => c.destroy());
      assert.ok(l.address.port > 0);
      assert.equal(l.address.host, s.listenAt.host);
      await l.close();
    });

    it('delivers many chunks in order, and counts bytes on both ends', async () => {
      const { listener, client, server } = await pair(s);
      const n = 2000;
      const expected = Buffer.concat(Array.from({ length: n }, (_, i) => patternChunk(i)));
      const received = readAll(server);
      for (let i = 0; i < n; i++) await client.write(patternChunk(i));
      await client.closeWrite();
      const got = await received;
      assert.equal(got.length, expected.length);
      assert.ok(got.equals(expected), 'bytes differ from what was written');
      assert.equal(client.bytesWritten, expected.length);
      assert.equal(server.bytesRead, expected.length);
      await Promise.all([client.close(), server.close()]);
      assert.equal(await client.closed, undefined);
      assert.equal(await server.closed, undefined);
      await listener.close();
    });

    it('carries 64 MiB intact (sha256) with a bounded write buffer', async () => {
      const { listener, client, server } = await pair(s);
      const total = 64 * 1024 * 1024;
      const chunkSize = 1024 * 1024;
      const h = createHash('sha256');
      const received = hashAll(server);
      let maxBuffered = 0;
      for (let off = 0; off < total; off += chunkSize) {
        const chunk = randomFillSync(new Uint8Array(chunkSize));
        h.update(chunk);
        await client.write(chunk);
        maxBuffered = Math.max(maxBuffered, client.writableLength);
      }
      await client.close();
      const got = await received;
      assert.equal(got.bytes, total);
      assert.equal(got.hash, h.digest('hex'));
      // After each awaited write the local buffer holds at most one chunk over the mark.
      assert.ok(maxBuffered <= HWM + chunkSize, `buffered ${maxBuffered} bytes`);
      await server.close();
      await listener.close();
    });

    it('applies backpressure: with no reader the writer stalls, then finishes once reading starts', async () => {
      const { listener, client, server } = await pair(s);
      const chunk = new Uint8Array(256 * 1024).fill(0xa5);
      const attempt = 128 * 1024 * 1024;
      let accepted = 0;
      let pending: Promise<void> | undefined;
      const writer = (async () => {
        while (accepted < attempt) {
          pending = client.write(chunk);
          await pending;
          accepted += chunk.byteLength;
        }
        await client.closeWrite();
      })();
      // Wait until the writer is blocked on a write and has stopped making progress.
      let last = -1;
      let still = 0;
      while (still < 10) {
        await sleep(20);
        if (accepted >= attempt) break;
        const blocked = pending !== undefined && (await isPending(pending));
        still = blocked && accepted === last ? still + 1 : 0;
        last = accepted;
      }
      assert.ok(accepted < attempt, 'writer never blocked: no backpressure');
      // Loose bound: kernel socket buffers may hold tens of MiB; without backpressure it would be all 128 MiB.
      assert.ok(accepted <= 64 * 1024 * 1024, `${accepted} bytes accepted with no reader`);
      assert.ok(client.writableLength <= HWM + chunk.byteLength, `local buffer ${client.writableLength}`);
      const got = await hashAll(server);
      await writer;
      assert.equal(got.bytes, attempt);
      assert.equal(server.bytesRead, attempt);
      await Promise.all([client.close(), server.close()]);
      await listener.close();
    });

    it('close() flushes everything queued before the peer sees the end', async () => {
      const { listener, client, server } = await pair(s);
      const parts = Array.from({ length: 300 }, (_, i) => patternChunk(i + 5000));
      const expected = Buffer.concat(parts);
      const received = readAll(server);
      // Deliberately not awaited one by one: close() must still flush them all.
      const writes = parts.map((p) => client.write(p));
      const closing = client.close();
      const got = await received;
      assert.ok(got.equals(expected), `got ${got.length} of ${expected.length} bytes`);
      assert.equal(await server.read(), null, 'read after the end keeps returning null');
      await server.close();
      await closing;
      await Promise.all(writes);
      assert.equal(await client.closed, undefined);
      assert.equal(await server.closed, undefined);
      await assert.rejects(client.write(new Uint8Array(1)), assertCode(ErrorCodes.CONNECTION));
      await listener.close();
    });

    it('half-close: the peer can still answer after our end', async () => {
      const { listener, client, server } = await pair(s);
      await client.write(Buffer.from('question'));
      await client.closeWrite();
      const q = await readAll(server);
      assert.equal(q.toString(), 'question');
      await server.write(Buffer.from('answer'));
      await server.close();
      assert.equal((await readAll(client)).toString(), 'answer');
      await client.close();
      await listener.close();
    });

    it('destroy() surfaces an error to the peer, not a clean end', async () => {
      const { listener, client, server } = await pair(s);
      await client.write(Buffer.from('hello'));
      const first = await server.read();
      assert.ok(first !== null);
      const pendingRead = server.read();
      client.destroy();
      await assert.rejects(
        (async () => {
          // The reader may still see buffered bytes first; it must end with an error, never null.
          for (let c = await pendingRead; ; c = await server.read()) {
            if (c === null) return;
          }
        })(),
        assertCode(ErrorCodes.CONNECTION),
      );
      const serverEnd = await server.closed;
      assert.ok(serverEnd instanceof PresyncError && serverEnd.code === ErrorCodes.CONNECTION);
      await client.closed;
      await assert.rejects(client.write(new Uint8Array(1)), assertCode(ErrorCodes.CONNECTION));
      await assert.rejects(client.read(), assertCode(ErrorCodes.CONNECTION));
      await listener.close();
    });

    it('destroy() by the reader fails a writer blocked on backpressure', async () => {
      const { listener, client, server } = await pair(s);
      const chunk = new Uint8Array(256 * 1024);
      let blocked: Promise<void> | undefined;
      for (let i = 0; i < 4096; i++) {
        const w = client.write(chunk);
        if (await isPending(w, 5)) {
          blocked = w;
          break;
        }
        await w;
      }
      assert.ok(blocked, 'writer never blocked');
      server.destroy(new Error('receiver gave up'));
      // The error may surface on the blocked write or, if it had just drained, on the next one.
      await assert.rejects(
        (async () => {
          await blocked;
          for (;;) await client.write(chunk);
        })(),
        assertCode(ErrorCodes.CONNECTION),
      );
      const end = await client.closed;
      assert.ok(end instanceof PresyncError && end.code === ErrorCodes.CONNECTION);
      await listener.close();
    });

    it('dial to a closed address fails with PRESYNC_ERR_CONNECTION', async () => {
      const l = await s.server.listen(s.listenAt, (c) => c.destroy());
      const addr = l.address;
      await l.close();
      await assert.rejects(s.client.dial(addr, { timeoutMs: 5000 }), assertCode(ErrorCodes.CONNECTION));
    });

    it('dial gives up with PRESYNC_ERR_TIMEOUT, and aborts with PRESYNC_ERR_ABORTED', async () => {
      const u = await s.unresponsive();
      try {
        await assert.rejects(u.client.dial(u.address, { timeoutMs: 150 }), assertCode(ErrorCodes.TIMEOUT));
        const ctl = new AbortController();
        const dialing = u.client.dial(u.address, { signal: ctl.signal });
        setTimeout(() => ctl.abort(), 50);
        await assert.rejects(dialing, assertCode(ErrorCodes.ABORTED));
      } finally {
        await u.cleanup();
      }
    });

    it('a listener accepts several successive connections', async () => {
      const seen: string[] = [];
      const listener = await s.server.listen(s.listenAt, async (c) => {
        seen.push((await readAll(c)).toString());
        await c.close();
      });
      for (const msg of ['one', 'two', 'three']) {
        const c = await s.client.dial(listener.address);
        await c.write(Buffer.from(msg));
        await c.close();
      }
      while (seen.length < 3) await sleep(5);
      assert.deepEqual([...seen].sort(), ['one', 'three', 'two']);
      await listener.close();
    });
  });
}
