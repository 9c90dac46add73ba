/**
 * A target whose disk is full (a 1 MiB tmpfs) must refuse the migration with
 * PRESYNC_ERR_IMAGE and go on serving; the source rolls back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController } from '../../src/guest/controller.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import type { TargetEvent } from '../../src/engine/target-session.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';

import { CLI } from '../../src/lab/cli-entry.ts';
import { scratchDir } from '../helpers/scratch.ts';
const SECRET = Buffer.from('disk-full-secret-0123456789abcdef');
const notRoot = process.getuid?.() === 0 ? undefined : 'needs root to mount a tmpfs';

test(
  'the fault matrix case target-disk-full: the target agent survives a full disk',
  {
    skip: notRoot,
    timeout: 120_000,
  },
  async () => {
    // Through the CLI: the case runs `presync serve` as a child, and a SIGBUS there must not take this runner down.
    const child = spawn(process.execPath, [CLI, 'faults', '--json', '--only', 'target-disk-full'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
    const c = (JSON.parse(out) as { cases: Array<{ passed: boolean; detail: string }> }).cases[0]!;
    assert.equal(c.passed, true, c.detail);
    assert.equal(code, 0);
  },
);

test(
  'a target image whose sidecar cannot be written (disk full) is refused with PRESYNC_ERR_IMAGE, not INTERNAL',
  {
    skip: notRoot,
    timeout: 60_000,
  },
  async () => {
    const dir = scratchDir('presync-disk-');
    const tiny = join(dir, 'tiny');
    mkdirSync(tiny);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', tiny]);
    const ends: Array<Extract<TargetEvent, { event: 'session-end' }>> = [];
    let agent: TargetAgent | undefined;
    try {
      // Fill the disk to the last byte: the image (sparse) can be created, its sidecar cannot.
      try {
        writeFileSync(join(tiny, 'filler'), Buffer.alloc(256 * 1024, 1));
      } catch {
        /* full */
      }
      const src = join(dir, 'src.img');
      writeFileSync(src, Buffer.alloc(64 * 4096, 7));
      agent = await TargetAgent.start({
        transport: new TcpTransport(),
        listen: { host: '127.0.0.1', port: 0 },
        imagePath: join(tiny, 'target.img'),
        secret: SECRET,
        onEvent: (e) => {
          if (e.event === 'session-end') ends.push(e);
        },
      });
      const m = new SourceMigration({
        transport: new TcpTransport(),
        to: agent.address,
        secret: SECRET,
        imagePath: src,
        policy: createPolicy('presync-naive', { geometry: { pageSize: 4096, pageCount: 64 }, seed: 1 }),
        controller: new ImageOnlyController(),
        epochMs: 20,
        reconnectAttempts: 1,
      });
      setTimeout(() => m.launch(), 500);
      const r = await m.run();
      assert.equal(r.outcome, 'rolled-back');
      assert.equal(ends[0]?.error?.code, 'PRESYNC_ERR_IMAGE', JSON.stringify(ends[0]?.error));
      assert.equal(r.error?.code, 'PRESYNC_ERR_IMAGE', JSON.stringify(r.error));
    } finally {
      await agent?.close();
      execFileSync('umount', ['-l', tiny]);
    }
  },
);
