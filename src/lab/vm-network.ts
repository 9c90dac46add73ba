/**
 * The lab network of the real VM (docs/qemu.md, "The lab network"): two
 * "host" namespaces (source and target) joined by netns.ts's shaped 1 Gbit/s
 * migration link, and beside it a separate VM network at layer 2: in each host
 * namespace a Linux bridge with a tap device for that host's QEMU, the two
 * bridges joined by a veth pair, and a third "client" namespace whose veth
 * ends in the source bridge, addressed in the guest's subnet. The guest keeps
 * its IP and MAC across the move; after the switchover the target QEMU's
 * self-announce (RARP) teaches both bridges the guest's new port.
 *
 * Nothing routes out of these namespaces. Everything is removed on close() or
 * when the process exits.
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { closeAtExit, createShapedLink, netnsUnavailable, run, type ShapedLink, type ShapedLinkOptions } from './netns.ts';

export interface VmNetwork {
  /** The source host's namespace (source QEMU and `presync qemu migrate` run here). */
  readonly sourceNs: string;
  /** The target host's namespace (target QEMU and `presync qemu serve`). */
  readonly targetNs: string;
  /** The namespace of the client that talks to the guest. */
  readonly clientNs: string;
  /** The shaped migration link between the two host namespaces. */
  readonly link: ShapedLink;
  /** The guest's address on the VM network, e.g. 10.160.7.2, and the prefix length. */
  readonly guestIp: string;
  readonly clientIp: string;
  readonly prefixLength: number;
  /** The guest NIC's MAC: the same on the source and the target QEMU. */
  readonly guestMac: string;
  /** The tap device for each host's QEMU (inside that host's namespace). */
  readonly sourceTap: string;
  readonly targetTap: string;
  readonly description: string;
  /** argv prefix that runs a command inside namespace `ns`. */
  exec(ns: string): string[];
  /** QEMU arguments for the guest NIC on `side`'s tap (virtio-net-pci, the guest's MAC). */
  nicArgs(side: 'source' | 'target'): string[];
  /** `presync.ip=…` for the guest's kernel command line. */
  readonly guestCmdline: string;
  close(): void;
}

export const GUEST_NETDEV_ID = 'net0';

/** QEMU's NIC arguments for a tap device that already exists (script=no: presync made it). */
export function tapNicArgs(tap: string, mac: string, id = GUEST_NETDEV_ID): string[] {
  return ['-netdev', `tap,id=${id},ifname=${tap},script=no,downscript=no`, '-device', `virtio-net-pci,netdev=${id},mac=${mac}`];
}

export interface VmNetworkOptions extends ShapedLinkOptions {
  /**
   * The client's TCP minimum retransmission timeout (`ip route … rto_min`),
   * ms; default the kernel's (200 ms). A segment lost while the guest moves is
   * resent only when it expires, so it bounds the blackout a TCP client sees.
   */
  readonly clientRtoMinMs?: number;
}

export function createVmNetwork(o: VmNetworkOptions = {}): VmNetwork {
  const why = netnsUnavailable();
  if (why) throw new PresyncError(ErrorCodes.INTERNAL, `cannot create network namespaces: ${why}`);
  const link = createShapedLink(o);
  const tag = randomBytes(3).toString('hex');
  const clientNs = `presync-c-${tag}`;
  // Names made in the root namespace must be unique there; inside a namespace they need not be.
  const joinS = `pvs${tag}`;
  const joinT = `pvt${tag}`;
  const clientIn = `pvc${tag}`;
  const clientBr = `pvb${tag}`;
  const bridge = 'br0';
  const tap = 'tap0';
  // A /24 at random in 10.150-199.x: the shaped link uses 10.200-249.x.
  const x = 150 + (randomBytes(1)[0] % 50);
  const y = randomBytes(1)[0];
  const guestIp = `10.${x}.${y}.2`;
  const clientIp = `10.${x}.${y}.100`;
  const mac = `52:54:00:${tag.slice(0, 2)}:${tag.slice(2, 4)}:${tag.slice(4, 6)}`;
  let closed = false;
  let forget = (): void => undefined;
  const net: VmNetwork = {
    sourceNs: link.nsA,
    targetNs: link.nsB,
    clientNs,
    link,
    guestIp,
    clientIp,
    prefixLength: 24,
    guestMac: mac,
    sourceTap: tap,
    targetTap: tap,
    guestCmdline: `presync.ip=${guestIp}/24`,
    description:
      `VM network 10.${x}.${y}.0/24 at layer 2: bridge ${bridge} with tap ${tap} in ${link.nsA} and in ${link.nsB}, the bridges joined by veth; ` +
      `client ${clientIp} in ${clientNs} on ${link.nsA}'s bridge${o.clientRtoMinMs !== undefined ? ` (TCP rto_min ${o.clientRtoMinMs} ms)` : ''}; guest ${guestIp} MAC ${mac}. Migration link: ${link.description}`,
    exec: (ns) => ['ip', 'netns', 'exec', ns],
    nicArgs: () => tapNicArgs(tap, mac),
    close: () => {
      if (closed) return;
      closed = true;
      forget();
      spawnSync('ip', ['netns', 'del', clientNs], { stdio: 'ignore' });
      // Deleting the host namespaces deletes their bridges, taps and veth ends, and with them the pairs.
      link.close();
    },
  };
  forget = closeAtExit(net);
  try {
    run(['ip', 'netns', 'add', clientNs]);
    for (const ns of [link.nsA, link.nsB]) {
      // STP off (the default) and no forward delay: a port forwards as soon as it has a carrier.
      run(['ip', '-n', ns, 'link', 'add', bridge, 'type', 'bridge', 'forward_delay', '0']);
      run(['ip', '-n', ns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
      run(['ip', '-n', ns, 'link', 'set', tap, 'master', bridge]);
    }
    run(['ip', 'link', 'add', joinS, 'type', 'veth', 'peer', 'name', joinT]);
    run(['ip', 'link', 'set', joinS, 'netns', link.nsA]);
    run(['ip', 'link', 'set', joinT, 'netns', link.nsB]);
    run(['ip', '-n', link.nsA, 'link', 'set', joinS, 'master', bridge]);
    run(['ip', '-n', link.nsB, 'link', 'set', joinT, 'master', bridge]);
    run(['ip', 'link', 'add', clientBr, 'type', 'veth', 'peer', 'name', clientIn]);
    run(['ip', 'link', 'set', clientBr, 'netns', link.nsA]);
    run(['ip', 'link', 'set', clientIn, 'netns', clientNs]);
    run(['ip', '-n', link.nsA, 'link', 'set', clientBr, 'master', bridge]);
    for (const [ns, devs] of [[link.nsA, [tap, joinS, clientBr, bridge]], [link.nsB, [tap, joinT, bridge]]] as const) {
      for (const d of devs) run(['ip', '-n', ns, 'link', 'set', d, 'up']);
    }
    run(['ip', '-n', clientNs, 'addr', 'add', `${clientIp}/24`, 'dev', clientIn]);
    run(['ip', '-n', clientNs, 'link', 'set', 'lo', 'up']);
    run(['ip', '-n', clientNs, 'link', 'set', clientIn, 'up']);
    if (o.clientRtoMinMs !== undefined) {
      run(['ip', '-n', clientNs, 'route', 'replace', `10.${x}.${y}.0/24`, 'dev', clientIn, 'proto', 'kernel', 'scope', 'link', 'src', clientIp, 'rto_min', `${o.clientRtoMinMs}ms`]);
    }
  } catch (e) {
    net.close();
    for (const d of [joinS, clientBr]) spawnSync('ip', ['link', 'del', d], { stdio: 'ignore' });
    throw e;
  }
  return net;
}
