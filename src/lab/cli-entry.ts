/**
 * The one place tests and benches get the `presync` command they spawn: the
 * built JavaScript (dist/cli/main.js), as users run it. Compiling the CLI on
 * the fly with tsx cost each child up to ~10 s on a loaded machine; the build
 * is done once instead. In a checkout, a dist/ older than any source file is
 * rebuilt first (`npm run build`), so a test never runs stale code.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BUILT = join(ROOT, 'dist/cli/main.js');

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtimeMs(p) : statSync(p).mtimeMs);
  }
  return newest;
}

function isStale(): boolean {
  if (!existsSync(BUILT)) return true;
  const src = join(ROOT, 'src');
  // An installed package has no src/: its dist/ is what there is.
  if (!existsSync(src)) return false;
  return newestMtimeMs(src) > statSync(BUILT).mtimeMs;
}

/** dist/cli/main.js, built first when missing or older than the sources. */
export function builtCli(): string {
  if (isStale()) {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    execFileSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, stdio: ['ignore', 2, 2] });
  }
  return BUILT;
}

/** The path to spawn with `process.execPath`: `spawn(process.execPath, [CLI, 'serve', …])`. */
export const CLI = builtCli();
