import { resolve, sep } from 'node:path';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

/**
 * Image identities become file names only through this function. An identity
 * comes from an unauthenticated HELLO, so anything that could name another
 * directory (separators, "..", NUL, a leading dot, non-ASCII look-alikes) is
 * refused rather than rewritten: two identities must never share a file.
 */
const SAFE_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$/;

export function imagePathInDir(imageDir: string, imageId: string): string {
  if (!SAFE_ID.test(imageId)) {
    throw new PresyncError(
      ErrorCodes.BAD_ARGUMENT,
      `image identity ${JSON.stringify(imageId.slice(0, 80))} cannot name a file in the target's image directory: use 1-200 characters of [A-Za-z0-9._-], not starting with "."`,
    );
  }
  const root = resolve(imageDir);
  const path = resolve(root, `${imageId}.img`);
  // Belt and braces: the pattern already rules out every way out of the directory.
  if (!path.startsWith(root + sep) || path.slice(root.length + 1).includes(sep)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `image identity ${JSON.stringify(imageId)} resolves outside ${root}`);
  }
  return path;
}
