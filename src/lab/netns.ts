/**
 * A real, rate-limited link between two network namespaces this process
 * creates: a veth pair with a tbf qdisc on both ends, addressed in a private
 * /30 that exists only inside the two namespaces (no route leads out, so no
 * traffic can leave the machine). Everything is removed on close() or when
 * the process exits.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

export interface ShapedLinkOptions {
  /** tc rate, e.g. '1gbit'. */
  readonly rate?: string;
  /** tbf bucket; must hold a whole GSO segment (64 KiB) or big sends stall. */
  readonly burst?: string;
  /** tbf queue limit expressed as latency. */
  readonly latency?: string;
}

export interface ShapedLink {
  readonly nsA: string;
  readonly nsB: string;
  readonly addrA: string;
  readonly addrB: string;
  readonly rate: string;
  readonly description: string;
  /** argv prefix that runs a command inside namespace `ns`. */
  exec(ns: string): string[];
  close(): void;
}

const open = new Set<{ close(): void }>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const l of [...open]) l.close();
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const l of [...open]) l.close();
      process.kill(process.pid, sig);
    });
  }
}

/**
 * Closes `x` when the process exits or is interrupted (SIGINT/SIGTERM), like
 * the shaped links; returns a function that forgets it (call it from close()).
 */
export function closeAtExit(x: { close(): void }): () => void {
  hookExit();
  open.add(x);
  return () => void open.delete(x);
}

/** Runs `args` (an `ip`/`tc` command); throws PRESYNC_ERR_INTERNAL with its stderr. */
export function run(args: string[]): void {
  try {
    execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim();
    throw new PresyncError(ErrorCodes.INTERNAL, `${args.join(' ')} failed: ${stderr || (e as Error).message}`, { cause: e });
  }
}

/** Why namespaces cannot be made here (not root, no `ip`, no tbf), or undefined. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const tool of ['ip', 'tc']) {
    const r = spawnSync(tool, ['-V'], { encoding: 'utf8' });
    if (r.status !== 0 && r.error) return `${tool} (iproute2) not found`;
  }
  return undefined;
}

export function createShapedLink(o: ShapedLinkOptions = {}): ShapedLink {
  const why = netnsUnavailable();
  if (why) throw new PresyncError(ErrorCodes.INTERNAL, `cannot create network namespaces: ${why}`);
  const tag = randomBytes(3).toString('hex');
  const nsA = `presync-a-${tag}`;
  const nsB = `presync-b-${tag}`;
  const vA = `psa${tag}`;
  const vB = `psb${tag}`;
  // 10.x.y.0/30 picked at random: it lives only inside these two namespaces.
  const x = 200 + (randomBytes(1)[0] % 50);
  const y = randomBytes(1)[0] & 0xfc;
  const addrA = `10.${x}.${y}.1`;
  const addrB = `10.${x}.${y}.2`;
  const rate = o.rate ?? '1gbit';
  const burst = o.burst ?? '256kb';
  const latency = o.latency ?? '20ms';
  let closed = false;
  const link: ShapedLink = {
    nsA,
    nsB,
    addrA,
    addrB,
    rate,
    description: `veth between network namespaces ${nsA} (${addrA}) and ${nsB} (${addrB}), tbf rate ${rate} burst ${burst} latency ${latency} on both ends`,
    exec: (ns) => ['ip', 'netns', 'exec', ns],
    close: () => {
      if (closed) return;
      closed = true;
      open.delete(link);
      // Deleting a namespace deletes the veth end inside it, and with it the pair.
      for (const ns of [nsA, nsB]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    },
  };
  hookExit();
  open.add(link);
  try {
    run(['ip', 'netns', 'add', nsA]);
    run(['ip', 'netns', 'add', nsB]);
    run(['ip', 'link', 'add', vA, 'type', 'veth', 'peer', 'name', vB]);
    run(['ip', 'link', 'set', vA, 'netns', nsA]);
    run(['ip', 'link', 'set', vB, 'netns', nsB]);
    for (const [ns, dev, addr] of [[nsA, vA, addrA], [nsB, vB, addrB]] as const) {
      run(['ip', '-n', ns, 'addr', 'add', `${addr}/30`, 'dev', dev]);
      run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      run(['ip', '-n', ns, 'link', 'set', dev, 'up']);
      run(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', rate, 'burst', burst, 'latency', latency]);
    }
  } catch (e) {
    link.close();
    spawnSync('ip', ['link', 'del', vA], { stdio: 'ignore' });
    throw e;
  }
  return link;
}
