/** Shared helpers for the transport tests (not a test file itself). */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import net from 'node:net';
import type { Connection, TransportAddress } from '../../src/transport/types.ts';

export async function readAll(conn: Connection): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of conn) parts.push(c);
  return Buffer.concat(parts);
}

/** Reads to the end, returning the sha256 and byte count without keeping the data. */
export async function hashAll(conn: Connection): Promise<{ hash: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const c of conn) {
    h.update(c);
    bytes += c.byteLength;
  }
  return { hash: h.digest('hex'), bytes };
}

/** Resolves with the settled state of `p` after `turns` macrotask turns, without waiting for it. */
export async function isPending(p: Promise<unknown>, turns = 3): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
  return !settled;
}

export { sleep } from '../../src/transport/deadline.ts';

/**
 * A TCP address where connect() hangs: a child process listens with backlog 1
 * and never accepts (its event loop is blocked), and we fill its accept queue;
 * the kernel then drops further SYNs, so a new dial neither succeeds nor fails.
 */
export async function unresponsiveTcpAddress(): Promise<{ address: TransportAddress; cleanup: () => Promise<void> }> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const s = require('node:net').createServer();
       s.listen({ host: '127.0.0.1', port: 0, backlog: 1 }, () => {
         process.stdout.write(s.address().port + '\\n');
         Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
       });`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
  });
  const fillers: net.Socket[] = [];
  // Fill the accept queue until a connect stays pending; the queue size is
  // kernel-specific, so probe instead of assuming it.
  for (let i = 0; i < 16; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    fillers.push(s);
    const connected = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 300);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    if (!connected) break;
  }
  return {
    address: { host: '127.0.0.1', port },
    cleanup: async () => {
      for (const s of fillers) s.destroy();
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once('exit', r)));
    },
  };
}

/** A TCP server that accepts and never says a word (a TLS handshake to it hangs). */
export async function silentTcpServer(): Promise<{ address: TransportAddress; cleanup: () => Promise<void> }> {
  const socks = new Set<net.Socket>();
  const server = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => undefined);
    s.on('close', () => socks.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address() as net.AddressInfo;
  return {
    address: { host: '127.0.0.1', port: a.port },
    cleanup: async () => {
      for (const s of socks) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Deterministic bytes: chunk i of the ordered-delivery test. */
export function patternChunk(i: number): Uint8Array {
  const len = 1 + ((i * 7919) % 4096);
  const b = new Uint8Array(len);
  for (let k = 0; k < len; k++) b[k] = (i * 31 + k * 17) & 0xff;
  return b;
}
