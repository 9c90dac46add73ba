/**
 * The target's temporary files have unpredictable names and are created with
 * O_EXCL|O_NOFOLLOW (issue 15, case 9): a symlink planted at the old,
 * predictable name of the sidecar's temporary file is never followed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController } from '../../src/guest/controller.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';

test('a symlink planted at <image>.presync.tmp is not followed: its target is untouched and the migration succeeds', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-files-'));
  let agent: TargetAgent | undefined;
  try {
    const victim = join(dir, 'victim.conf');
    writeFileSync(victim, 'precious\n');
    const dst = join(dir, 'dst.img');
    symlinkSync(victim, `${dst}.presync.tmp`);
    const src = join(dir, 'src.img');
    writeFileSync(src, randomBytes(64 * 4096));
    const secret = randomBytes(32);
    agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dst, secret });
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: agent.address,
      secret,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry: { pageSize: 4096, pageCount: 64 }, seed: 1 }),
      controller: new ImageOnlyController(),
      epochMs: 20,
    });
    const run = m.run();
    setTimeout(() => m.launch(), 300);
    const r = await run;
    assert.equal(r.outcome, 'done', `${r.error?.code}: ${r.error?.message}`);
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the symlink was followed');
    assert.match(readFileSync(`${dst}.presync`, 'utf8'), /"state":"valid"/);
    // No temporary file is left behind (the planted link is not ours to remove).
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp') && f !== 'dst.img.presync.tmp'), []);
  } finally {
    await agent?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
