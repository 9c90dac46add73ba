import { execFileSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface TestGuestImages {
  readonly kernel: string;
  readonly initrd: string;
  /** The initramfs with the real programs (test-guest/apps/README.md), when built with them. */
  readonly initrdApps?: string;
}

let built: TestGuestImages | undefined;
let builtApps: TestGuestImages | undefined;

/**
 * The test VM (test-guest/README.md): builds it with scripts/build-guest.sh
 * once per process (the script itself skips what is up to date) and returns
 * its kernel and initramfs; with `apps`, also the initramfs with the real
 * programs (test-guest/apps/README.md).
 */
export function buildTestGuest(o: { apps?: boolean } = {}): TestGuestImages {
  if (o.apps) {
    if (builtApps) return builtApps;
    runBuild(['--apps']);
    builtApps = { kernel: join(ROOT, 'test-guest/build/vmlinuz'), initrd: join(ROOT, 'test-guest/build/initrd.img'), initrdApps: join(ROOT, 'test-guest/build/initrd-apps.img') };
    return builtApps;
  }
  if (built) return built;
  runBuild([]);
  built = { kernel: join(ROOT, 'test-guest/build/vmlinuz'), initrd: join(ROOT, 'test-guest/build/initrd.img') };
  return built;
}

function runBuild(args: string[]): void {
  try {
    execFileSync(join(ROOT, 'scripts/build-guest.sh'), args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim().split('\n').slice(-3).join(' | ');
    throw new PresyncError(ErrorCodes.INTERNAL, `scripts/build-guest.sh failed: ${stderr || (e as Error).message}`, { cause: e });
  }
}
