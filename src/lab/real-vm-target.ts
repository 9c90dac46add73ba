/**
 * Interim target agent for `bench qemu --vm real`, until `presync qemu serve
 * -- qemu-system-x86_64 ARGS…` exists: what `presync qemu serve` does, with the
 * target QEMU given the real VM's disk and NIC as extra arguments. Run inside
 * the target host's namespace as `node dist/lab/real-vm-target.js JSON`; prints
 * serve's JSON lines (listening, handed-over).
 */
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';
import { TargetAgent } from '../engine/target-agent.ts';
import { claimImageGeometry, QemuTarget } from '../qemu/qemu-target.ts';
import type { LaunchOptions } from '../qemu/vm.ts';
import { TcpTransport } from '../transport/tcp.ts';

export interface InterimTargetArgs {
  readonly launch: LaunchOptions;
  readonly listenHost: string;
  readonly qemuListen: string;
  readonly secretFile: string;
}

async function main(arg: string): Promise<void> {
  const a = JSON.parse(arg) as InterimTargetArgs;
  let secret = readFileSync(a.secretFile);
  if (secret.at(-1) === 0x0a) secret = secret.subarray(0, secret.length - 1);
  const image = a.launch.ram.kind === 'file' ? a.launch.ram.memPath : '';
  const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ ...o, ts: new Date().toISOString() })}\n`);
  claimImageGeometry(image, { pageSize: 4096, pageCount: a.launch.memBytes / 4096 });
  const target = await QemuTarget.start({ launch: a.launch, listenUri: a.qemuListen, onEvent: (e) => say(e) });
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const agent = await TargetAgent.start({
    transport: new TcpTransport(),
    listen: { host: a.listenHost, port: 0 },
    imagePath: image,
    secret,
    force: true,
    hook: target.hook(),
    onEvent: (e) => {
      say({ ...e });
      if (e.event === 'session-end' && e.outcome === 'handed-over') {
        say({ event: 'handed-over', pid: target.vm?.pid ?? null, resumedAtMs: target.resumedAtMs });
        setImmediate(done);
      }
    },
  });
  say({ event: 'listening', host: agent.address.host, port: agent.address.port, qemuUri: target.uri, image });
  process.once('SIGTERM', done);
  process.once('SIGINT', done);
  await finished;
  await agent.close();
  await target.close();
  process.exit(0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) void main(process.argv[2]);
