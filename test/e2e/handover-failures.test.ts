/**
 * A handover is confirmed only once the application runs on the target
 * (issue 15, cases 3 and 7): a hook that fails before it started the
 * application, or a target that fails at handover before running the hook
 * (its state file cannot be written), is a definite failure — the source
 * rolls back and its application runs again — never `done`, never in doubt.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ProcessController, processState } from '../../src/guest/controller.ts';
import { SourceMigration, type MigrationResult } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { commandHook } from '../../src/engine/handover-command.ts';
import type { HandoverHook, TargetEvent } from '../../src/engine/target-session.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';

const SECRET = randomBytes(32);
const PAGE = 4096;
const PAGES = 64;

interface Run {
  r: MigrationResult;
  ends: Array<Extract<TargetEvent, { event: 'session-end' }>>;
  appState: string | null;
  sidecar: string;
}

/** Migrates a static image whose "application" is a sleeping process, with the given hook. */
async function migrateWith(hook: HandoverHook | undefined, targetDir: string, beforeLaunch?: () => void): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'presync-handover-'));
  const ends: Run['ends'] = [];
  let agent: TargetAgent | undefined;
  let app: ChildProcess | undefined;
  try {
    const src = join(dir, 'src.img');
    writeFileSync(src, randomBytes(PAGES * PAGE));
    const dst = join(targetDir, 'dst.img');
    agent = await TargetAgent.start({
      transport: new TcpTransport(),
      listen: { host: '127.0.0.1', port: 0 },
      imagePath: dst,
      secret: SECRET,
      ...(hook ? { hook } : {}),
      onEvent: (e) => {
        if (e.event === 'session-end') ends.push(e);
      },
    });
    app = spawn('sleep', ['120'], { stdio: 'ignore' });
    await new Promise((r) => app!.once('spawn', r));
    let inSync = false;
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: agent.address,
      secret: SECRET,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: PAGES }, seed: 1 }),
      controller: new ProcessController(app.pid!),
      epochMs: 20,
      reconnectAttempts: 1,
      onEvent: (e) => {
        if (e.event === 'progress' && e.status.stalePages === 0 && e.status.epoch > 2) inSync = true;
      },
    });
    const run = m.run();
    for (let i = 0; i < 500 && !inSync; i++) await new Promise((r) => setTimeout(r, 10));
    beforeLaunch?.();
    m.launch();
    const r = await run;
    await new Promise((res) => setTimeout(res, 50));
    return { r, ends, appState: processState(app.pid!), sidecar: readFileSync(`${dst}.presync`, 'utf8') };
  } finally {
    await agent?.close();
    if (app && app.exitCode === null) {
      app.kill('SIGCONT');
      app.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

function assertRolledBack(x: Run, code: string): void {
  assert.equal(x.r.outcome, 'rolled-back', `outcome ${x.r.outcome} (${x.r.error?.code}: ${x.r.error?.message})`);
  assert.equal(x.r.error?.code, code);
  assert.ok(x.appState !== null && x.appState !== 'T', `the source application must run again (state ${x.appState})`);
  assert.equal(x.ends.at(-1)?.outcome, 'failed');
  assert.equal(x.ends.at(-1)?.error?.code, code);
}

for (const [what, cmd] of [
  ['exits 3', 'echo "app refused: no config" >&2; exit 3'],
  ['names a missing program', 'presync-no-such-program-xyz --start'],
  ['is killed', 'kill -9 $$'],
] as const) {
  test(`a handover hook that ${what} rolls back: PRESYNC_ERR_HANDOVER_HOOK on both sides, the source application runs again`, { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'presync-handover-dst-'));
    try {
      const x = await migrateWith(commandHook(cmd, { graceMs: 2000, logDir: dir }), dir);
      assertRolledBack(x, 'PRESYNC_ERR_HANDOVER_HOOK');
      assert.match(x.sidecar, /"state":"invalid"/);
      if (what === 'exits 3') {
        assert.match(x.r.error!.message, /app refused: no config/, 'the hook\'s stderr tail reaches the source');
        assert.match(x.ends.at(-1)!.error!.message, /app refused: no config/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('a hook still running after the grace period confirms the handover; one that exits 0 at once does too', { timeout: 60_000 }, async () => {
  for (const cmd of ['exec sleep 3', 'true']) {
    const dir = mkdtempSync(join(tmpdir(), 'presync-handover-dst-'));
    try {
      const x = await migrateWith(commandHook(cmd, { graceMs: 300, logDir: dir }), dir);
      assert.equal(x.r.outcome, 'done', `${cmd}: ${x.r.error?.code}: ${x.r.error?.message}`);
      assert.equal(x.ends.at(-1)?.outcome, 'handed-over');
      assert.match(x.sidecar, /"state":"valid"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test(
  'a target that cannot write its state file at handover (disk full) fails before the hook: the source rolls back, not in doubt',
  { skip: process.getuid?.() === 0 ? undefined : 'needs root to mount a tmpfs', timeout: 60_000 },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'presync-handover-disk-'));
    const tiny = join(dir, 'tiny');
    mkdirSync(tiny);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', tiny]);
    let hookRan = false;
    try {
      const x = await migrateWith(
        {
          start: async () => {
            hookRan = true;
          },
        },
        tiny,
        () => {
          // The image is in sync; now the disk fills up to the last byte.
          try {
            writeFileSync(join(tiny, 'filler'), Buffer.alloc(1 << 20, 1));
          } catch {
            /* full */
          }
        },
      );
      assertRolledBack(x, 'PRESYNC_ERR_IMAGE');
      assert.equal(hookRan, false, 'the hook must not run when the target cannot record the handover');
    } finally {
      execFileSync('umount', ['-l', tiny]);
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
