import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { MemoryNetwork, MemoryTransport } from '../../src/transport/memory.ts';
import { shapeConnection, ShapedTransport } from '../../src/transport/shaper.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import type { Connection, Transport } from '../../src/transport/types.ts';
import { isPending, patternChunk, readAll } from './transport-fixtures.ts';

async function connect(t: Transport, host: string): Promise<{ client: Connection; server: Connection; close: () => Promise<void> }> {
  let accept!: (c: Connection) => void;
  const accepted = new Promise<Connection>((r) => (accept = r));
  const l = await t.listen({ host, port: 0 }, (c) => accept(c));
  const client = await t.dial(l.address);
  const server = await accepted;
  return { client, server, close: () => l.close({ destroyConnections: true }) };
}

describe('shaper', () => {
  it('a shaped transfer of N bytes takes at least (N - burst) / rate', async () => {
    const rate = 4 * 1024 * 1024;
    const burst = 128 * 1024;
    const n = 2 * 1024 * 1024;
    const t = new ShapedTransport(new TcpTransport(), { rate, burstBytes: burst });
    const { client, server, close } = await connect(t, '127.0.0.1');
    const t0 = performance.now();
    const got = readAll(server);
    for (let off = 0; off < n; off += 256 * 1024) await client.write(new Uint8Array(256 * 1024).fill(off & 0xff));
    await client.closeWrite();
    assert.equal((await got).length, n);
    const elapsed = performance.now() - t0;
    const floor = ((n - burst) / rate) * 1000;
    assert.ok(elapsed >= floor, `took ${elapsed.toFixed(1)} ms, the rate allows no less than ${floor.toFixed(1)} ms`);
    assert.equal(client.bytesWritten, n);
    await close();
  });

  it('a shared bucket limits all connections together', async () => {
    const rate = 2 * 1024 * 1024;
    const burst = 64 * 1024;
    const n = 512 * 1024;
    const t = new ShapedTransport(new MemoryTransport({ network: new MemoryNetwork() }), { rate: `${rate}`, burstBytes: burst, shared: true });
    const a = await connect(t, 'm');
    const b = await connect(t, 'm');
    const t0 = performance.now();
    const send = async (c: Connection): Promise<void> => {
      for (let off = 0; off < n; off += 32 * 1024) await c.write(new Uint8Array(32 * 1024));
      await c.closeWrite();
    };
    const [ga, gb] = await Promise.all([readAll(a.server), readAll(b.server), send(a.client), send(b.client)]);
    assert.equal(ga.length + gb.length, 2 * n);
    const elapsed = performance.now() - t0;
    const floor = ((2 * n - burst) / rate) * 1000;
    assert.ok(elapsed >= floor, `took ${elapsed.toFixed(1)} ms < ${floor.toFixed(1)} ms`);
    await a.close();
    await b.close();
  });

  it('keeps the order of writes issued without awaiting', async () => {
    const t = new MemoryTransport({ network: new MemoryNetwork() });
    const { client, server, close } = await connect(t, 'm');
    const shaped = shapeConnection(client, { rate: '8MB/s', burstBytes: 4096, sliceBytes: 1000 });
    const parts = Array.from({ length: 200 }, (_, i) => patternChunk(i));
    const got = readAll(server);
    const writes = parts.map((p) => shaped.write(p));
    await shaped.close();
    await Promise.all(writes);
    assert.ok((await got).equals(Buffer.concat(parts)));
    await close();
  });

  it('destroy() during a shaped wait fails the pending write with PRESYNC_ERR_CONNECTION', async () => {
    const t = new MemoryTransport({ network: new MemoryNetwork() });
    const { client, server, close } = await connect(t, 'm');
    // 1 KiB/s: the second write has to wait about a minute for tokens.
    const shaped = shapeConnection(client, { rate: 1024, burstBytes: 1024 });
    await shaped.write(new Uint8Array(1024));
    const slow = shaped.write(new Uint8Array(60 * 1024));
    assert.ok(await isPending(slow));
    assert.ok(shaped.writableLength >= 60 * 1024 - 1024, 'queued bytes are counted');
    shaped.destroy();
    await assert.rejects(slow, (e: unknown) => e instanceof PresyncError && e.code === ErrorCodes.CONNECTION);
    assert.ok((await server.closed) instanceof PresyncError);
    await close();
  });

  it('rejects a bad rate with PRESYNC_ERR_BAD_ARGUMENT', () => {
    const bad = (e: unknown): boolean => e instanceof PresyncError && e.code === ErrorCodes.BAD_ARGUMENT;
    assert.throws(() => new ShapedTransport(new TcpTransport(), { rate: 'quick' }), bad);
    assert.throws(() => new ShapedTransport(new TcpTransport(), { rate: -1 }), bad);
    assert.throws(() => new ShapedTransport(new TcpTransport(), { rate: 1000, burstBytes: 0 }), bad);
  });
});
