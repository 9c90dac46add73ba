/**
 * Issue 15, case 12 (the target's parts): a wrong secret is logged by the
 * target as PRESYNC_ERR_AUTH (not as a connection reset); secrets with too
 * little entropy are refused when they are loaded, by both agents; an error
 * never echoes an input file's contents (a secret file passed by mistake).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController } from '../../src/guest/controller.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import type { TargetEvent } from '../../src/engine/target-session.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';

import { CLI } from '../../src/lab/cli-entry.ts';

function cli(args: string[], timeoutMs = 90_000): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((res) => {
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.once('close', (code) => {
      clearTimeout(timer);
      res({ code, stderr, stdout });
    });
  });
}

test('a source with the wrong secret: the target logs PRESYNC_ERR_AUTH, not a connection reset', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-auth-'));
  const ends: Array<Extract<TargetEvent, { event: 'session-end' }>> = [];
  let agent: TargetAgent | undefined;
  try {
    const src = join(dir, 'src.img');
    writeFileSync(src, randomBytes(16 * 4096));
    agent = await TargetAgent.start({
      transport: new TcpTransport(),
      listen: { host: '127.0.0.1', port: 0 },
      imagePath: join(dir, 'dst.img'),
      secret: randomBytes(32),
      onEvent: (e) => {
        if (e.event === 'session-end') ends.push(e);
      },
    });
    const r = await new SourceMigration({
      transport: new TcpTransport(),
      to: agent.address,
      secret: randomBytes(32),
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry: { pageSize: 4096, pageCount: 16 }, seed: 1 }),
      controller: new ImageOnlyController(),
    }).run();
    assert.equal(r.error?.code, 'PRESYNC_ERR_AUTH');
    for (let i = 0; i < 200 && ends.length === 0; i++) await new Promise((res) => setTimeout(res, 10));
    assert.equal(ends[0]?.error?.code, 'PRESYNC_ERR_AUTH', `the target logged ${ends[0]?.error?.code}: ${ends[0]?.error?.message}`);
  } finally {
    await agent?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('secrets with too little entropy are refused at load by serve and migrate (exit 2, one line)', { timeout: 600_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-weak-'));
  // A stand-in application for migrate's --pid: it must never be touched.
  const app = spawn('sleep', ['120'], { stdio: 'ignore' });
  try {
    writeFileSync(join(dir, 'img'), Buffer.alloc(4 * 4096, 1));
    const weak: Array<[string, Buffer]> = [
      ['16 zero bytes', Buffer.alloc(16)],
      ['one repeated character', Buffer.from('a'.repeat(40))],
      ['seven distinct bytes', Buffer.from('abcdefgabcdefgabcdefg')],
    ];
    for (const [what, bytes] of weak) {
      const f = join(dir, 'secret');
      writeFileSync(f, bytes);
      for (const args of [
        ['serve', '--listen', '127.0.0.1:0', '--image', join(dir, 'dst.img'), '--secret-file', f],
        ['migrate', '--image', join(dir, 'img'), '--to', '127.0.0.1:9', '--secret-file', f, '--pid', String(app.pid), '--launch-after', '10s'],
      ]) {
        const r = await cli(args, 90_000);
        assert.equal(r.code, 2, `${args[0]} with ${what}: exit ${r.code}\n${r.stderr}`);
        assert.match(r.stderr, /PRESYNC_ERR_BAD_ARGUMENT: .*secret/);
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      }
    }
  } finally {
    app.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an input file passed by mistake is never echoed in an error (a secret file given as a results file)', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-echo-'));
  try {
    const f = join(dir, 'secret');
    writeFileSync(f, 'TOPSECRET-4f9a2c7e1b8d6053');
    const r = await cli(['report', f, '-o', join(dir, 'out.html')]);
    assert.notEqual(r.code, 0);
    assert.doesNotMatch(r.stderr + r.stdout, /TOPSECRET|4f9a2c/, r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
