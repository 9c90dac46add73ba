import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PresyncError } from '../../src/core/errors.ts';
import { TargetImage, metaPath } from '../../src/guest/target-image.ts';
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
