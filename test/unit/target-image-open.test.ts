import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PresyncError } from '../../src/core/errors.ts';
import { TargetImage, metaPath } from '../../src/guest/target-image.ts';
import { CLI } from '../../src/lab/cli-entry.ts';
import { claimImageGeometry } from '../../src/qemu/qemu-target.ts';
import { scratchDir } from '../helpers/scratch.ts';

const geometry = { pageSize: 4096, pageCount: 16 };

function refusal(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof PresyncError, String(e));
    return e.code;
  }
  assert.fail('open should have failed');
}

test('an image the target created but could not describe is removed, so a retry fails the same way (not as a stranger’s file)', () => {
  const dir = scratchDir('presync-timg-');
  const path = join(dir, 'target.img');
  // A directory where the sidecar goes: the image can be created, its state cannot be written.
  mkdirSync(metaPath(path));
  assert.equal(refusal(() => TargetImage.open(path, geometry, 'app-1')), 'PRESYNC_ERR_IMAGE');
  assert.equal(existsSync(path), false, 'the half-created image is gone');
  assert.equal(refusal(() => TargetImage.open(path, geometry, 'app-1')), 'PRESYNC_ERR_IMAGE');
});

test('qemu serve refuses a RAM file that was handed over (a VM may run from it) unless --force', () => {
  const dir = scratchDir('presync-timg-');
  const path = join(dir, 'vm.ram');
  writeFileSync(path, '');
  writeFileSync(metaPath(path), JSON.stringify({ format: 'presync-image/1', imageId: 'vm', pageSize: 4096, pageCount: 16, state: 'valid' }) + '\n');
  assert.equal(refusal(() => claimImageGeometry(path, geometry)), 'PRESYNC_ERR_IMAGE_EXISTS');
  claimImageGeometry(path, geometry, { force: true });
  const secret = join(dir, 'secret');
  writeFileSync(secret, randomBytes(32).toString('base64'));
  const r = spawnSync(process.execPath, [CLI, 'qemu', 'serve', '--listen', '127.0.0.1:0', '--image', path, '--secret-file', secret, '--qemu-listen', '127.0.0.1:0', '--kernel', join(dir, 'no-kernel'), '--memory', '1M'], { encoding: 'utf8' });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^presync qemu: PRESYNC_ERR_IMAGE_EXISTS: .*handed over/m);
});
