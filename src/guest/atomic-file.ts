import { closeSync, constants as fsc, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/**
 * Replaces `path` with `data` atomically: the bytes go to a new file in the
 * same directory, under an unpredictable name, created with
 * O_EXCL|O_NOFOLLOW (mode 0600), which is then renamed over `path`. A
 * symlink or file planted by someone else is never opened, let alone
 * written through; rename replaces a symlink at `path` itself, it does not
 * follow it. Throws the underlying error; the temporary file is removed.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(8).toString('hex')}.tmp`);
  const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    let done = 0;
    while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      /* closed already */
    }
    try {
      unlinkSync(tmp);
    } catch {
      /* never created or already renamed */
    }
    throw e;
  }
}
