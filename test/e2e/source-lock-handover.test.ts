/**
 * The source lock agrees with the target's refusals at the handover (issue
 * 15, item 7): a target that answers HANDOVER with an error (here a failing
 * `--on-handover` hook) has not started the guest, so the source rolls back,
 * resumes it, and leaves no lock, and `--recover` has nothing to do — through
 * the real CLI, with real processes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processState } from '../../src/guest/controller.ts';
import { lockPath } from '../../src/engine/source-lock.ts';
import { runCli, spawnCli } from '../../src/lab/faults-cli.ts';

test('a failing --on-handover hook: migrate exits 3 (rolled back), the guest runs, no lock is left and --recover finds nothing', { timeout: 90_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-lock-handover-'));
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'lock-handover-secret-0123456789abc\n');
  const image = join(dir, 'app.img');
  writeFileSync(image, Buffer.alloc(128 * 4096, 4));
  const guest = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  const serve = spawnCli(['serve', '--listen', '127.0.0.1:0', '--image', join(dir, 'target.img'), '--secret-file', secret, '--on-handover', 'exit 3', '--json']);
  try {
    const port = Number((await serve.next((l) => l.event === 'listening')).port);
    const mig = spawnCli(['migrate', '--image', image, '--to', `127.0.0.1:${port}`, '--secret-file', secret, '--pid', String(guest.pid), '--epoch', '50ms', '--launch-after', '500ms', '--json']);
    const code = await mig.exited;
    const res = [...mig.lines].reverse().find((l) => typeof l.outcome === 'string');
    assert.equal(res?.outcome, 'rolled-back', `${JSON.stringify(res)} ${mig.stderr()}`);
    assert.equal((res?.error as { code: string }).code, 'PRESYNC_ERR_HANDOVER_HOOK');
    assert.equal(code, 3);
    const st = processState(guest.pid!);
    assert.ok(st !== null && st !== 'T' && st !== 'Z', `the guest runs again (state ${st})`);
    assert.equal(existsSync(lockPath(image)), false, 'no lock left');
    const rec = await runCli(['migrate', '--image', image, '--recover', '--json']);
    assert.equal(rec.code, 0, rec.stderr);
    assert.equal(rec.lines.find((l) => l.event === 'recover')?.action, 'none');
  } finally {
    guest.kill('SIGKILL');
    serve.child.kill('SIGTERM');
    await serve.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});
