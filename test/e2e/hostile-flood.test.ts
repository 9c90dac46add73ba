/**
 * Unauthenticated memory exhaustion (issue 15, case 8): 80 connections each
 * announce a 16 MiB frame and send half of it, without ever authenticating.
 * `presync serve` must stay under 200 MB of resident memory, return near its
 * baseline once they close, and still serve a real migration.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController } from '../../src/guest/controller.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { crc32 } from '../../src/wire/crc32.ts';
import { FrameType, PROTOCOL_VERSION } from '../../src/wire/constants.ts';

import { CLI } from '../../src/lab/cli-entry.ts';
const PAGE = 4096;
const PAGES = 256;
const FRAME = 16 * 1024 * 1024;

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** A valid frame header (both CRCs right) announcing a HELLO of `total` bytes, header included. */
function header(total: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt8(PROTOCOL_VERSION, 0);
  h.writeUInt8(FrameType.HELLO, 1);
  h.writeUInt32LE(total - 16, 4);
  h.writeUInt32LE(0, 8);
  h.writeUInt32LE(crc32(h.subarray(0, 12)), 12);
  return h;
}

test('80 connections announcing 16 MiB frames and sending half: serve stays under 200 MB, returns near baseline, and still migrates', { timeout: 180_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-flood-'));
  const secretFile = join(dir, 'secret');
  const secret = randomBytes(32);
  writeFileSync(secretFile, secret);
  const serve = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--image', join(dir, 'dst.img'), '--secret-file', secretFile, '--json'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const socks: net.Socket[] = [];
  try {
    const port = await new Promise<number>((res, rej) => {
      const rl = createInterface({ input: serve.stdout! });
      rl.on('line', (l) => {
        const e = JSON.parse(l) as { event: string; port?: number };
        if (e.event === 'listening') res(e.port!);
      });
      serve.once('exit', () => rej(new Error('serve exited')));
    });
    await new Promise((r) => setTimeout(r, 500));
    const baseline = rssMb(serve.pid!);
    const half = Buffer.alloc(FRAME / 2, 0x41);
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMb(serve.pid!));
    }, 20);
    await Promise.all(
      Array.from({ length: 80 }, () =>
        new Promise<void>((res) => {
          const s = net.connect({ host: '127.0.0.1', port }, () => {
            s.write(header(FRAME));
            s.write(half, () => res());
          });
          s.on('error', () => res());
          s.on('close', () => res());
          socks.push(s);
        }),
      ),
    );
    await new Promise((r) => setTimeout(r, 1000));
    peak = Math.max(peak, rssMb(serve.pid!));
    for (const s of socks) s.destroy();
    await new Promise((r) => setTimeout(r, 1500));
    clearInterval(sampler);
    const after = rssMb(serve.pid!);
    t.diagnostic(`serve RSS: baseline ${baseline.toFixed(0)} MB, peak ${peak.toFixed(0)} MB, after ${after.toFixed(0)} MB`);
    assert.ok(peak < 200, `serve's RSS peaked at ${peak.toFixed(0)} MB (baseline ${baseline.toFixed(0)} MB)`);
    assert.ok(after < baseline + 40, `serve's RSS is ${after.toFixed(0)} MB after the flood closed (baseline ${baseline.toFixed(0)} MB)`);
    // And it still serves a real migration.
    const src = join(dir, 'src.img');
    writeFileSync(src, randomBytes(PAGES * PAGE));
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: { host: '127.0.0.1', port },
      secret,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: PAGES }, seed: 1 }),
      controller: new ImageOnlyController(),
      epochMs: 20,
    });
    const run = m.run();
    setTimeout(() => m.launch(), 300);
    const r = await run;
    assert.equal(r.outcome, 'done', `${r.error?.code}: ${r.error?.message}`);
    assert.ok(readFileSync(join(dir, 'dst.img')).equals(readFileSync(src)));
  } finally {
    for (const s of socks) s.destroy();
    serve.kill('SIGTERM');
    await new Promise((r) => serve.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
});
