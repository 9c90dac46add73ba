import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../core/policies/registry.ts';
import { SourceMigration, type MigrationResult } from '../engine/source-session.ts';
import { ImageOnlyController } from '../guest/controller.ts';
import { TcpTransport } from '../transport/tcp.ts';
import { AGENT_START_GUARD_MS, JsonChild } from './child-json.ts';

export interface ThroughputResult {
  readonly imageBytes: number;
  /** Wall time of `cp` of the same file, ms, and its rate. */
  readonly cpMs: number;
  readonly cpBytesPerSec: number;
  /** Time from the migration's start until the target held every page, ms. */
  readonly syncMs: number;
  readonly syncBytesPerSec: number;
  /** Whole migration (sync + launch + verify + handover), ms. */
  readonly totalMs: number;
  readonly ratioVsCp: number;
  readonly verified: boolean;
  /** The migration itself, metrics and per-epoch series (for --out). */
  readonly migration: MigrationResult;
}

/** Fills a file with distinct non-zero pages (nothing for zero-page elision or compression to skip). */
function makeImage(path: string, bytes: number): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(4 << 20);
  for (let off = 0; off < bytes; off += chunk.length) {
    for (let i = 0; i < chunk.length; i += 8) chunk.writeUInt32LE(((off + i) ^ 0x9e3779b9) >>> 0, i);
    writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - off));
  }
  closeSync(fd);
}

/**
 * Full initial sync of an image over loopback, unshaped, next to `cp` of the
 * same file in the same run (both read a page-cache-resident source).
 */
export async function runThroughputBench(o: { bytes: number; dir?: string }): Promise<ThroughputResult> {
  // RAM images live in /dev/shm (QEMU's memory-backend-file); use it when present.
  const dir = mkdtempSync(join(o.dir ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir()), 'presync-tput-'));
  try {
    const src = join(dir, 'src.img');
    makeImage(src, o.bytes);
    // Warm the page cache for both contenders alike.
    spawnSync('cat', [src], { stdio: ['ignore', 'ignore', 'inherit'] });
    const t0 = performance.now();
    const cp = spawnSync('cp', [src, join(dir, 'cp.img')], { stdio: 'inherit' });
    const cpMs = performance.now() - t0;
    if (cp.status !== 0) throw new Error('cp failed');
    rmSync(join(dir, 'cp.img'));

    const secret = Buffer.from('throughput-bench-secret-01234567');
    const secretFile = join(dir, 'secret');
    writeFileSync(secretFile, secret);
    const transport = new TcpTransport();
    // The target agent runs as its own process, as it would on another host.
    const serve = JsonChild.cli(['serve', '--listen', '127.0.0.1:0', '--image', join(dir, 'dst.img'), '--secret-file', secretFile, '--json']);
    const port = await serve.listeningPort(AGENT_START_GUARD_MS);
    const agent = { address: { host: '127.0.0.1', port }, close: () => serve.stop() };
    const pageCount = o.bytes / 4096;
    let syncMs = -1;
    const start = performance.now();
    const m = new SourceMigration({
      transport,
      to: agent.address,
      secret,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry: { pageSize: 4096, pageCount }, seed: 1 }),
      controller: new ImageOnlyController(),
      onEvent: (e) => {
        if (e.event === 'progress' && syncMs < 0 && e.status.stalePages === 0) {
          syncMs = performance.now() - start;
          m.launch();
        }
      },
    });
    const r = await m.run();
    const totalMs = performance.now() - start;
    await agent.close();
    const cpBytesPerSec = (o.bytes / cpMs) * 1000;
    const syncBytesPerSec = (o.bytes / syncMs) * 1000;
    return { imageBytes: o.bytes, cpMs, cpBytesPerSec, syncMs, syncBytesPerSec, totalMs, ratioVsCp: syncBytesPerSec / cpBytesPerSec, verified: r.verified, migration: r };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
