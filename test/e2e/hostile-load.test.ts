import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ProcessController } from '../../src/guest/controller.ts';
import { metaPath } from '../../src/guest/target-image.ts';
import { SourceMigration, type MigrationResult } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';
import { scratchDir } from '../helpers/scratch.ts';

const SECRET = Buffer.from('load-test-secret-0123456789abcdef');
const PAGE = 4096;
const WRITER = resolve(import.meta.dirname, '../fixtures/image-writer.mjs');

async function startWriter(image: string, pages: number, report: string): Promise<ChildProcess> {
  const w = spawn(process.execPath, [WRITER, '--image', image, '--pages', String(pages), '--report', report, '--writes-per-ms', '5'], { stdio: 'ignore' });
  for (let i = 0; i < 400 && !existsSync(report); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(existsSync(report), 'writer started');
  return w;
}

test('four concurrent migrations of running writers into one agent with an image directory all finish verified and byte-identical', { timeout: 120_000 }, async () => {
  const dir = scratchDir('presync-load-');
  const imageDir = join(dir, 'images');
  const agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imageDir, secret: SECRET });
  const sessions: string[] = [];
  const writers: ChildProcess[] = [];
  try {
    const runs = await Promise.all(
      [1024, 1536, 2048, 2560].map(async (pages, i) => {
        const src = join(dir, `guest${i}.img`);
        const w = await startWriter(src, pages, join(dir, `report${i}`));
        writers.push(w);
        const m = new SourceMigration({
          transport: new TcpTransport(),
          to: agent.address,
          secret: SECRET,
          imagePath: src,
          imageId: `guest-${i}`,
          policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: pages }, seed: i }),
          controller: new ProcessController(w.pid!),
          epochMs: 50,
          onEvent: (e) => {
            if (e.event === 'connected') sessions.push(`guest-${i}`);
          },
        });
        // Launch only once all four are connected and syncing, so they really overlap.
        const launchWhenAllConnected = setInterval(() => {
          if (sessions.length >= 4) {
            clearInterval(launchWhenAllConnected);
            setTimeout(() => m.launch(), 300 + i * 50);
          }
        }, 20);
        const r: MigrationResult = await m.run();
        clearInterval(launchWhenAllConnected);
        return { r, src, dst: join(imageDir, `guest-${i}.img`) };
      }),
    );
    for (const [i, { r, src, dst }] of runs.entries()) {
      assert.equal(r.outcome, 'done', `guest ${i}: ${JSON.stringify(r.error)}`);
      assert.equal(r.verified, true);
      assert.ok(readFileSync(src).equals(readFileSync(dst)), `guest ${i}: target image equals the source`);
      assert.equal(JSON.parse(readFileSync(metaPath(dst), 'utf8')).state, 'valid');
    }
    // Each identity got its own file, and nothing else appeared in the directory.
    assert.deepEqual(
      readdirSync(imageDir).sort(),
      [0, 1, 2, 3].flatMap((i) => [`guest-${i}.img`, `guest-${i}.img.presync`]).sort(),
    );
  } finally {
    for (const w of writers) w.kill('SIGKILL');
    await agent.close();
  }
});
