/**
 * "verified" must be true of the target's file, not of the digests the target
 * remembers writing: another process flips a byte in every page of the target
 * image, during presync and during the pause. The migration must repair the
 * image and end with it identical to the source, or roll back — never `done`
 * with a difference (issue 15, case 1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import { ImageOnlyController, type GuestController } from '../../src/guest/controller.ts';
import { SourceMigration, type MigrationResult } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import type { TargetEvent } from '../../src/engine/target-session.ts';
import { TcpTransport } from '../../src/transport/tcp.ts';

const SECRET = randomBytes(32);
const PAGE = 4096;
const PAGES = 1024;

/** Flips byte 7 of every page of `path`, from another process (as a stray writer would). */
function tamper(path: string): void {
  const js = `const fs=require('fs');const fd=fs.openSync(${JSON.stringify(path)},'r+');const b=Buffer.alloc(1);` +
    `for(let i=0;i<${PAGES};i++){fs.readSync(fd,b,0,1,i*${PAGE}+7);b[0]^=0xff;fs.writeSync(fd,b,0,1,i*${PAGE}+7)}fs.closeSync(fd)`;
  execFileSync(process.execPath, ['-e', js]);
}

function differingPages(a: Buffer, b: Buffer): number {
  let n = 0;
  for (let p = 0; p < PAGES; p++) if (!a.subarray(p * PAGE, (p + 1) * PAGE).equals(b.subarray(p * PAGE, (p + 1) * PAGE))) n++;
  return n;
}

async function migrate(opts: { controller: GuestController; beforeLaunch?: (events: TargetEvent[], dst: string) => Promise<void> }): Promise<{ r: MigrationResult; src: Buffer; dst: Buffer; events: TargetEvent[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'presync-integrity-'));
  const events: TargetEvent[] = [];
  let agent: TargetAgent | undefined;
  try {
    const srcPath = join(dir, 'src.img');
    const dstPath = join(dir, 'dst.img');
    writeFileSync(srcPath, randomBytes(PAGES * PAGE));
    agent = await TargetAgent.start({ transport: new TcpTransport(), listen: { host: '127.0.0.1', port: 0 }, imagePath: dstPath, secret: SECRET, onEvent: (e) => events.push(e) });
    let inSync = false;
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: agent.address,
      secret: SECRET,
      imagePath: srcPath,
      policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: PAGES }, seed: 1 }),
      controller: opts.controller,
      epochMs: 20,
      onEvent: (e) => {
        if (e.event === 'progress' && e.status.stalePages === 0 && e.status.epoch > 2) inSync = true;
      },
    });
    const run = m.run();
    for (let i = 0; i < 500 && !inSync; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(inSync, 'presync never caught up');
    await opts.beforeLaunch?.(events, dstPath);
    m.launch();
    const r = await run;
    return { r, src: readFileSync(srcPath), dst: readFileSync(dstPath), events };
  } finally {
    await agent?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function assertNeverDoneWithADifference(x: { r: MigrationResult; src: Buffer; dst: Buffer }): void {
  assert.ok(x.r.outcome === 'done' || x.r.outcome === 'rolled-back', `outcome ${x.r.outcome} (${x.r.error?.code})`);
  if (x.r.outcome === 'done') assert.equal(differingPages(x.src, x.dst), 0, 'done, yet the target image differs from the source');
}

test('tampering with the target image during presync: repaired during presync, done and identical', { timeout: 60_000 }, async () => {
  const x = await migrate({
    controller: new ImageOnlyController(),
    beforeLaunch: async (events, dst) => {
      // Let the target acknowledge what it has, then damage every page of it.
      await new Promise((r) => setTimeout(r, 200));
      tamper(dst);
      // The target's background re-verification finds the damage and has it resent.
      for (let i = 0; i < 1000 && !events.some((e) => e.event === 'repair'); i++) await new Promise((r) => setTimeout(r, 10));
    },
  });
  assertNeverDoneWithADifference(x);
  assert.equal(x.r.outcome, 'done', `expected a repair, got ${x.r.outcome} (${x.r.error?.code}: ${x.r.error?.message})`);
  const repaired = x.events.reduce((n, e) => n + (e.event === 'repair' ? e.pages : 0), 0);
  assert.ok(repaired >= PAGES, `the target reported ${repaired} damaged pages during presync, ${PAGES} were damaged`);
});

test('tampering with the target image while the guest is paused: caught by the verify, never done with a difference', { timeout: 60_000 }, async () => {
  let dstPath = '';
  const controller: GuestController = {
    ...new ImageOnlyController(),
    kind: 'image',
    pause: async () => tamper(dstPath),
    resume: async () => undefined,
    commit: async () => undefined,
    release: async () => undefined,
    isAlive: () => true,
  };
  const x = await migrate({
    controller,
    beforeLaunch: async (_e, dst) => {
      dstPath = dst;
    },
  });
  assertNeverDoneWithADifference(x);
  const verify = x.events.find((e) => e.event === 'verify');
  assert.ok(verify && verify.event === 'verify' && !verify.match, 'the verify should have found the damaged pages');
});
