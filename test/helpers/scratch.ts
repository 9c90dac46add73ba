import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];

function removeAll(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
}

/**
 * A fresh directory for a test's files, removed when the test process exits
 * (passed or failed: node --test runs each file in its own process). `shm`
 * puts it in /dev/shm, where RAM images of running guests live.
 */
export function scratchDir(prefix: string, o: { shm?: boolean } = {}): string {
  const base = o.shm && existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = mkdtempSync(join(base, prefix));
  if (made.length === 0) process.once('exit', removeAll);
  made.push(dir);
  return dir;
}
