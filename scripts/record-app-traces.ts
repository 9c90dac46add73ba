/**
 * Records the traces in traces/: each real program of the test guest
 * (test-guest/apps/README.md) running under QEMU, 60 s of 100 ms epochs, with
 * `presync trace record --image` on the VM's RAM file. Provenance goes to traces/provenance.json.
 *
 *   node --import tsx scripts/record-app-traces.ts [--parallel N] [app…]
 *
 * Needs the guest built with its programs (scripts/build-guest.sh --apps) and QEMU; takes ~2 min per
 * program under TCG.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { GUEST_APPS, recordAppTrace, type GuestApp, type TraceProvenance } from '../src/lab/app-traces.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BUILD = join(ROOT, 'test-guest/build');
const argv = process.argv.slice(2);
let parallel = 1;
const pi = argv.indexOf('--parallel');
if (pi >= 0) {
  parallel = Number(argv[pi + 1]);
  argv.splice(pi, 2);
}
const apps = (argv.length > 0 ? argv : [...GUEST_APPS]) as GuestApp[];
for (const a of apps) if (!GUEST_APPS.includes(a)) throw new Error(`unknown app ${a}; known: ${GUEST_APPS.join(', ')}`);
const provPath = join(ROOT, 'traces/provenance.json');
const prov: Record<string, TraceProvenance> = existsSync(provPath) ? JSON.parse(readFileSync(provPath, 'utf8')) : {};

async function one(app: GuestApp): Promise<void> {
  const file = `traces/${app}.jsonl.gz`;
  console.error(`recording ${app}…`);
  const p = await recordAppTrace({
    app,
    out: join(ROOT, file),
    file,
    kernel: join(BUILD, 'vmlinuz'),
    initrd: join(BUILD, 'initrd-apps.img'),
    buildDir: BUILD,
    cli: join(ROOT, 'bin/presync.js'),
    hostLoad: Math.round(loadavg()[0] * 10) / 10,
  });
  prov[app] = p;
  console.error(`recorded ${file}`);
}

const queue = [...apps];
const failed: string[] = [];
await Promise.all(Array.from({ length: Math.max(1, parallel) }, async () => {
  for (let a = queue.shift(); a; a = queue.shift()) {
    // One program failing must not abandon the others' VMs mid-recording.
    await one(a).catch((e: unknown) => {
      failed.push(a!);
      console.error(`${a}: ${e instanceof Error ? e.message : String(e)}`);
    });
  }
}));
const sorted = Object.fromEntries(Object.keys(prov).sort().map((k) => [k, prov[k]]));
writeFileSync(provPath, JSON.stringify(sorted, null, 2) + '\n');
if (failed.length > 0) {
  console.error(`failed: ${failed.join(', ')}`);
  process.exitCode = 1;
}
