/**
 * `presync qemu serve` / `presync qemu migrate`: the target and source agents
 * for a running QEMU VM. The target agent owns a target QEMU started with
 * `-incoming defer` over the agent's image (its RAM file); the source agent
 * attaches to the VM over QMP, syncs its RAM file, and drives QEMU's own
 * stream (device state only, x-ignore-shared) at the switchover.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { migrate } from '../../api/migrate.ts';
import { AgentMetrics, serveMetrics } from '../../api/metrics.ts';
import { policyNames } from '../../core/policies/registry.ts';
import { formatBytes } from '../progress.ts';
import { makeResults, runRecord, writeResults } from '../../engine/results-file.ts';
import type { MigrationResult } from '../../engine/source-session.ts';
import { TargetAgent } from '../../engine/target-agent.ts';
import { QemuGuestController, type QemuSwitchoverFigures } from '../../qemu/qemu-controller.ts';
import { claimImageGeometry, QemuTarget } from '../../qemu/qemu-target.ts';
import { analyzeTargetCommandLine, qemuOptValue } from '../../qemu/command-line.ts';
import { attachVm, machineArgs, RAM_BACKEND_ID, type Accel, type LaunchOptions } from '../../qemu/vm.ts';
import type { SegmentFile } from '../../core/image-layout.ts';
import { parseNbdAddress, type CopyMode, type DiskMirrorEvent } from '../../qemu/disk-mirror.ts';
import { formatAddress } from '../../transport/address.ts';
import { intFlag, parseFlags } from '../args.ts';
import { printMigrationEvents, scanFlag } from './migrate.ts';
import { TRANSPORT_FLAGS, addressFlag, bandwidthFlag, durationFlag, jsonLine, readSecret, tlsFromFlags, transportFromFlags } from '../common.ts';
import type { CommandIO } from '../io.ts';
import { resultJson } from './migrate.ts';
import { migrationExitCode, rollbackOnSignals } from '../migration-exit.ts';

const SERVE_USAGE =
  'presync qemu serve --listen HOST:PORT --secret-file F --qemu-listen HOST:PORT [--nbd-listen HOST:PORT] [--metrics HOST:PORT] [--force] [--json] [--tls-cert F --tls-key F [--tls-ca F]] TARGET, TARGET one of: ' +
  '[--image /dev/shm/FILE] -- qemu-system-x86_64 ARGS… | --image /dev/shm/FILE --attach-qmp SOCKET [--machine TYPE] | ' +
  '--image /dev/shm/FILE --kernel K [--initrd I] [--append A] [--memory 256M] [--machine pc] [--smp N] [--accel tcg|kvm] [--serial FILE] [--qmp SOCKET]';
const MIGRATE_USAGE =
  'presync qemu migrate --qmp SOCKET --to HOST:PORT --qemu-uri tcp:HOST:PORT --secret-file F [--policy NAME] [--launch-after DURATION | --control SOCKET] ' +
  '[--launch-when-ready] [--copy-storage all|DISK,… --nbd HOST:PORT [--copy-mode background|write-blocking] [--verify-disk]] [--bandwidth RATE] [--epoch DURATION] [--downtime-limit DURATION] [--codec none|deflate|lz4] [--streams N] [--scan auto|full|incremental] [--leave-stopped] [--metrics HOST:PORT [--metrics-linger DURATION]] [-o|--out FILE] [--json]';

export async function qemuCommand(argv: string[], io: CommandIO, signal?: AbortSignal): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'serve') return qemuServe(rest, io, signal);
  if (sub === 'migrate') return qemuMigrate(rest, io);
  if (sub === undefined || sub === '--help' || sub === '-h') {
    io.out(`usage:\n  ${SERVE_USAGE}\n  ${MIGRATE_USAGE}\n\nSee docs/qemu.md.\n`);
    return sub === undefined ? 2 : 0;
  }
  throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `unknown qemu subcommand "${sub}"; expected serve or migrate`);
}

/** `256M`, `1G`, `268435456`: a whole number of MiB, as QEMU's -m wants. */
export function parseMemory(text: string | undefined, flag = 'memory'): number {
  const t = (text ?? '256M').trim();
  const m = /^(\d+)([KMGT]?)(?:i?B)?$/i.exec(t);
  if (!m) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${flag} must look like 256M or 1G, got "${t}"`);
  const mult: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };
  const bytes = Number(m[1]) * (mult[m[2].toUpperCase()] ?? 1);
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % 2 ** 20 !== 0) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${flag} must be a positive whole number of MiB, got "${t}"`);
  }
  return bytes;
}

function uriFromAddress(value: string | undefined, flag: string): string {
  const a = addressFlag(value?.replace(/^tcp:/, ''), flag);
  return `tcp:${formatAddress(a)}`;
}

/** Flags that describe the machine: they go with presync building the command line, not with `--` or --attach-qmp. */
const MACHINE_FLAGS = ['kernel', 'initrd', 'append', 'memory', 'machine', 'smp', 'accel', 'serial', 'qmp'] as const;

/** How serve gets its target QEMU. */
type TargetMode = 'flags' | 'command' | 'attach';

async function qemuServe(argvAll: string[], io: CommandIO, signal?: AbortSignal): Promise<number> {
  // Everything after `--` is the user's QEMU command line, not presync's flags.
  const dd = argvAll.indexOf('--');
  const argv = dd >= 0 ? argvAll.slice(0, dd) : argvAll;
  const qemuCommand = dd >= 0 ? argvAll.slice(dd + 1) : undefined;
  const { values } = parseFlags(
    argv,
    {
      listen: { type: 'string' },
      image: { type: 'string' },
      'secret-file': { type: 'string' },
      'qemu-listen': { type: 'string' },
      'attach-qmp': { type: 'string' },
      kernel: { type: 'string' },
      initrd: { type: 'string' },
      append: { type: 'string' },
      memory: { type: 'string' },
      machine: { type: 'string' },
      smp: { type: 'string' },
      accel: { type: 'string' },
      serial: { type: 'string' },
      qmp: { type: 'string' },
      'nbd-listen': { type: 'string' },
      metrics: { type: 'string' },
      force: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      ...TRANSPORT_FLAGS,
    },
    SERVE_USAGE,
  );
  if (values.help) {
    io.out(
      `${SERVE_USAGE}\n\nThe target agent for QEMU VMs: receives presync migrations into the target QEMU's RAM file (a shared memory-backend-file, e.g. in /dev/shm),\n` +
        `has that QEMU listen on --qemu-listen for the source QEMU's device state, and confirms the handover once it runs the guest. The target QEMU is one of:\n` +
        `  -- qemu-system-x86_64 ARGS…  your own command line (the source VM's devices); presync adds only -incoming defer, -S and its own -qmp socket.\n` +
        `                               Every RAM backend must be -object memory-backend-file,…,mem-path=FILE,share=on; the image is its mem-path\n` +
        `                               (--image, if given, must be that file). Anonymous RAM, -incoming, -daemonize are refused (exit 2).\n` +
        `  --attach-qmp SOCKET          a QEMU your launcher started with -incoming defer (and -S) and a QMP socket for presync; presync checks it\n` +
        `                               (status inmigrate, RAM a shared file = --image, machine = --machine if given), sends stop (so it cannot run the\n` +
        `                               guest on its own), migrate-set-capabilities and migrate-incoming, and never kills it.\n` +
        `  --kernel K …                 presync builds the command line (kernel boot, no devices) from the machine flags.\n` +
        `After a failed attempt a QEMU presync started is restarted; an attached one that the attempt reached is left to its launcher and serve\n` +
        `exits 3 (1 if it went away, 4 if it may run the guest). After a successful attempt serve stops listening, leaves the VM running and exits 0.\n` +
        `A RAM file that was handed over (its .presync state file says valid) is refused: a VM may still run from it. --force overrides that.\n` +
        `--nbd-listen HOST:PORT: non-shared storage. The waiting target QEMU serves its writable disks over NBD (writable, one export per disk, named by\n` +
        `its -drive id or -blockdev node name) for the source's "qemu migrate --copy-storage --nbd HOST:PORT", and stops serving them before the guest runs.\n`,
    );
    return 0;
  }
  const mode: TargetMode = qemuCommand !== undefined ? 'command' : values['attach-qmp'] !== undefined ? 'attach' : 'flags';
  if (mode === 'command' && values['attach-qmp'] !== undefined) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--attach-qmp and a QEMU command line after -- are two ways to get the target QEMU; give one\nusage: ${SERVE_USAGE}`);
  }
  if (mode !== 'flags') {
    for (const f of MACHINE_FLAGS) {
      if (values[f] === undefined || (mode === 'attach' && f === 'machine')) continue;
      throw new PresyncError(
        ErrorCodes.BAD_ARGUMENT,
        mode === 'command'
          ? `--${f} does not go with a QEMU command line after --: put what it says in that command line`
          : `--${f} does not go with --attach-qmp: the attached QEMU's launcher decides its machine`,
      );
    }
  }
  if (mode === 'flags' && !values.kernel) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `give the target QEMU: -- qemu-system-x86_64 ARGS…, --attach-qmp SOCKET, or --kernel (the same kernel the source VM booted)\nusage: ${SERVE_USAGE}`);
  }
  if (mode !== 'command' && !values.image) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--image PATH is required (the target VM's RAM file, e.g. /dev/shm/vm-target.ram)\nusage: ${SERVE_USAGE}`);
  const listen = addressFlag(values.listen, 'listen');
  const qemuListen = uriFromAddress(values['qemu-listen'], 'qemu-listen');
  const nbdListen = values['nbd-listen'] !== undefined ? parseNbdAddress(values['nbd-listen'], 'nbd-listen') : undefined;
  const secret = readSecret(values['secret-file']);
  const { transport } = transportFromFlags(values);
  const force = values.force === true;
  const planned = mode === 'attach' ? undefined : targetLaunch(mode, values, qemuCommand);
  const launch = planned?.launch;
  const image = launch?.ram.kind === 'file' ? launch.ram.memPath : resolve(values.image!);
  /** The RAM files, one per backend (an attached QEMU's are known once it is checked). */
  let segments: SegmentFile[] = planned?.segments ?? [];
  const claim = (): void => {
    for (const seg of segments) claimImageGeometry(seg.path, { pageSize: 4096, pageCount: seg.bytes! / 4096 }, { force });
  };
  const json = values.json === true;
  const say = (obj: Record<string, unknown>, text: string) => (json ? io.out(jsonLine({ ...obj, ts: new Date().toISOString() })) : io.err(`presync qemu serve: ${text}\n`));
  const metrics = values.metrics !== undefined ? new AgentMetrics() : undefined;
  const endpoint = metrics && values.metrics !== undefined ? await serveMetrics(values.metrics, metrics) : undefined;
  if (endpoint) say({ event: 'metrics', host: endpoint.host, port: endpoint.port }, `metrics on http://${endpoint.host}:${endpoint.port}/metrics`);

  let finish!: (code: number) => void;
  const finished = new Promise<number>((r) => (finish = r));
  let target: QemuTarget | undefined;
  /** An attached QEMU that can take no more attempts: said once, and serve ends. */
  let gaveUp = false;
  const giveUp = (): void => {
    const sp = target?.spoiled;
    if (!sp || gaveUp) return;
    gaveUp = true;
    const code = sp.reason === 'in-doubt' ? 4 : sp.reason === 'gone' ? 1 : 3;
    say({ event: 'target-spoiled', reason: sp.reason, error: sp.error.toJSON(), exitCode: code }, `${sp.error.code}: ${sp.error.message}`);
    finish(code);
  };
  try {
    if (launch) claim();
    target = await QemuTarget.start({
      ...(launch
        ? { launch }
        : {
            attach: {
              qmpSocket: resolve(values['attach-qmp']!),
              image,
              ...(values.machine !== undefined ? { machine: values.machine } : {}),
              // Checked before presync changes anything in the attached QEMU.
              onChecked: (d) => {
                segments = (d.backends ?? [{ id: d.backendId, memPath: d.memPath, bytes: d.memBytes }]).map((b) => ({ id: b.id, path: b.memPath, bytes: b.bytes }));
                claim();
              },
            },
          }),
      listenUri: qemuListen,
      ...(nbdListen ? { nbd: { listen: nbdListen } } : {}),
      onEvent: (e) => {
        const disks = e.event === 'qemu-ready' && e.nbd ? `, serving disks ${e.disks.join(', ')} over NBD on ${e.nbd}` : '';
        if (e.event === 'qemu-ready') say(e, e.pid === null ? `attached target QEMU waiting for the guest on ${e.uri}${disks}` : `target QEMU ${e.pid} waiting for the guest on ${e.uri}${disks}`);
        else if (e.event === 'disk-verified') say(e, `disks ${e.disks.join(', ')} equal the source's (${e.ms} ms to hash)`);
        else if (e.event === 'qemu-exited') {
          if (e.pid === null) say(e, `lost the attached target QEMU's QMP connection${e.expected ? '' : '; its launcher must start a new one'}`);
          else say(e, `target QEMU ${e.pid} exited (code ${e.code}, signal ${e.signal})${e.expected ? '' : '; restarting it'}`);
          if (!e.expected) setImmediate(giveUp);
        } else if (e.event === 'qemu-running') say(e, `target QEMU ${e.pid} runs the guest`);
        else say(e, `target QEMU: ${e.error.code}: ${e.error.message}`);
      },
    });
  } catch (e) {
    await endpoint?.close();
    throw e;
  }
  const t = target;

  const agent = await TargetAgent.start({
    transport,
    listen,
    imagePath: image,
    ...(segments.length > 1 ? { segments } : {}),
    secret,
    // The RAM file is created by the target QEMU itself, never by a previous migration.
    force: true,
    hook: t.hook(),
    onEvent: (e) => {
      if (metrics) {
        if (e.event === 'phase') metrics.onPhase(e.phase);
        else if (e.event === 'verify') metrics.onVerify(e.match);
        else if (e.event === 'session-end') metrics.onEnd(e.outcome, null);
      }
      // The source's disk mirrors completed in its pause, before the verify phase: the target's disks can be hashed from here on.
      if (e.event === 'phase' && e.phase === 'verify' && nbdListen) t.prehashDisks();
      if (json) io.out(jsonLine({ ...e, ts: new Date().toISOString() }));
      else if (e.event === 'session-end') io.err(`presync qemu serve: session ${e.sessionId} ${e.outcome}${e.error ? ` (${e.error.code}: ${e.error.message})` : ''}, ${e.pagesWritten} pages written\n`);
      else if (e.event === 'session-start') io.err(`presync qemu serve: session ${e.sessionId} from ${e.remote}, image ${e.imageId}${e.resume ? ' (resuming)' : ''}\n`);
      if (e.event !== 'session-end') return;
      if (e.outcome === 'handed-over') {
        const qmp = mode === 'attach' ? resolve(values['attach-qmp']!) : values.qmp ? resolve(values.qmp) : null;
        const serial = launch && existsSync(launch.serialLog) ? launch.serialLog : null;
        say({ event: 'handed-over', pid: t.pid, qmp, serial, resumedAtMs: t.resumedAtMs }, `guest handed over; ${t.pid === null ? 'the attached QEMU' : `QEMU ${t.pid}`} runs it. No more migrations into ${image}.`);
        // The image is now the running guest's memory: nothing may write it
        // any more. serve's job is done: it exits 0 (left to an emptying event
        // loop, Node would end it with 13, an unsettled top-level await).
        setImmediate(() => finish(0));
      } else if (!t.handedOver) {
        void t.afterFailedAttempt().then((r) => r === 'spoiled' && giveUp(), () => undefined);
      }
    },
  });
  const a = agent.address;
  say(
    { event: 'listening', host: a.host, port: a.port, qemuUri: t.uri, image, ram: segments.map((g) => ({ id: g.id, path: g.path, bytes: g.bytes })), mode, pid: t.pid, nbd: nbdListen ? `${nbdListen.host}:${nbdListen.port}` : null },
    `listening on ${a.host}:${a.port}, ${mode === 'attach' ? 'attached ' : ''}target QEMU on ${t.uri}, image ${image}${nbdListen ? `, disks over NBD on ${nbdListen.host}:${nbdListen.port}` : ''}`,
  );

  const stop = () => finish(0);
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  signal?.addEventListener('abort', stop, { once: true });
  const code = await finished;
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  await agent.close();
  await endpoint?.close();
  // A migrated guest keeps running after the agent exits; a QEMU still waiting is stopped (an attached one is only let go).
  await t.close();
  return code;
}

/**
 * The target QEMU serve starts: the user's command line after `--`, or one
 * built from the machine flags the same way; both checked by
 * analyzeTargetCommandLine. The RAM backend's mem-path is the agent's image.
 */
function targetLaunch(mode: 'flags' | 'command', values: Partial<Record<(typeof MACHINE_FLAGS)[number] | 'image', string>>, qemuCommand: string[] | undefined): { launch: LaunchOptions; segments: SegmentFile[] } {
  let commandLine: string[];
  if (mode === 'command') commandLine = qemuCommand!;
  else {
    const accel = (values.accel ?? 'tcg') as Accel;
    if (accel !== 'tcg' && accel !== 'kvm') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--accel must be tcg or kvm, got "${values.accel}"`);
    const image = resolve(values.image!);
    const spec = {
      memBytes: parseMemory(values.memory),
      ram: { kind: 'file', memPath: image, share: true } as const,
      kernel: values.kernel!,
      ...(values.initrd ? { initrd: values.initrd } : {}),
      ...(values.append ? { append: values.append } : {}),
      machine: values.machine ?? 'pc',
      smp: intFlag(values.smp, 'smp', 1, 1, 256),
      accel,
      serialLog: values.serial ? resolve(values.serial) : `${image}.serial`,
    };
    commandLine = ['qemu-system-x86_64', ...machineArgs(spec), ...(values.qmp ? ['-qmp', `unix:${qemuOptValue(resolve(values.qmp))},server=on,wait=off`] : [])];
  }
  const cl = analyzeTargetCommandLine(commandLine);
  // Several backends (NUMA nodes, DIMMs) are one segmented image, the first backend's file its name.
  const segments: SegmentFile[] = cl.backends.map((b) => ({ id: b.id, path: resolve(b.memPath!), bytes: b.size! }));
  const backend = cl.backends[0];
  const image = segments[0].path;
  if (values.image !== undefined && resolve(values.image) !== image) {
    throw new PresyncError(ErrorCodes.QEMU_CMDLINE, `--image ${values.image} is not the RAM backend's mem-path ${backend.memPath}: presync syncs that file; leave --image out or make them the same`);
  }
  for (const [i, seg] of segments.entries()) {
    if (existsSync(seg.path) && statSync(seg.path).isDirectory()) {
      const b = cl.backends[i];
      throw new PresyncError(ErrorCodes.QEMU_CMDLINE, `mem-path ${b.memPath} of RAM backend ${b.id} is a directory, where QEMU would make a nameless file presync cannot open; give a file path, e.g. ${join(b.memPath!, 'vm.ram')}`);
    }
  }
  return {
    launch: {
      memBytes: cl.memBytes,
      ram: { kind: 'file', memPath: image, share: true },
      kernel: '',
      ...(cl.machine !== undefined ? { machine: cl.machine } : {}),
      qmpSocket: `${image}.qmp`,
      serialLog: cl.serialFile !== undefined ? resolve(cl.serialFile) : `${image}.serial`,
      commandLine,
    },
    segments,
  };
}

export interface QemuMigrationJson extends Record<string, unknown> {
  engineDowntimeMs: number | null;
  qemu: QemuSwitchoverFigures & { memPath: string; memBytes: number };
}

export function qemuResultJson(r: MigrationResult, c: QemuGuestController, vm: { memPath: string; memBytes: number }): QemuMigrationJson {
  const base = resultJson(r);
  const f = c.figures;
  return {
    ...base,
    // QEMU's own downtime: vCPUs stopped on the source until the target loaded the device state and reported back (return-path).
    downtimeMs: r.outcome === 'done' && f.downtimeMs !== null ? f.downtimeMs : base.downtimeMs,
    engineDowntimeMs: base.downtimeMs as number | null,
    qemu: { ...f, memPath: vm.memPath, memBytes: vm.memBytes },
  };
}

async function qemuMigrate(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      qmp: { type: 'string' },
      to: { type: 'string' },
      'qemu-uri': { type: 'string' },
      'secret-file': { type: 'string' },
      policy: { type: 'string' },
      'launch-after': { type: 'string' },
      control: { type: 'string' },
      epoch: { type: 'string' },
      streams: { type: 'string' },
      scan: { type: 'string' },
      codec: { type: 'string' },
      'downtime-limit': { type: 'string' },
      'leave-stopped': { type: 'boolean' },
      'launch-when-ready': { type: 'boolean' },
      'copy-storage': { type: 'string' },
      nbd: { type: 'string' },
      'copy-mode': { type: 'string' },
      'verify-disk': { type: 'boolean' },
      metrics: { type: 'string' },
      'metrics-linger': { type: 'string' },
      out: { type: 'string', short: 'o' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      ...TRANSPORT_FLAGS,
    },
    MIGRATE_USAGE,
  );
  if (values.help) {
    io.out(
      `${MIGRATE_USAGE}\n\nThe source agent for a running QEMU VM (its RAM a shared memory-backend-file, id=${RAM_BACKEND_ID}): pre-synchronizes the RAM file to the\n` +
        `target agent (--to) until launch, then migrates QEMU to the target QEMU (--qemu-uri, printed by "presync qemu serve") with x-ignore-shared,\n` +
        `stops at pre-switchover, copies the rest, verifies, lets QEMU move the device state, and quits the source QEMU (--leave-stopped keeps it).\n` +
        `Policies: ${policyNames().join(', ')} (default presync).\n` +
        `Disks on shared storage need nothing. Non-shared: --copy-storage all (every writable disk) or DISK,… (-drive ids / -blockdev node names)\n` +
        `mirrors them into the target's NBD exports (--nbd HOST:PORT, from "qemu serve --nbd-listen") from the start; the launch waits until every mirror\n` +
        `is ready; the mirrors complete in the pause. --verify-disk hashes both sides' disks with the guest stopped (costs pause time) and refuses a mismatch.\n`,
    );
    return 0;
  }
  if (!values.qmp) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--qmp SOCKET is required (a QMP socket of the running VM no one else is connected to)\nusage: ${MIGRATE_USAGE}`);
  if (values['launch-after'] === undefined && values.control === undefined && values['launch-when-ready'] !== true) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `say when to launch: --launch-after DURATION, --launch-when-ready, or --control SOCKET and "presync launch --control SOCKET"\nusage: ${MIGRATE_USAGE}`);
  }
  const codec = values.codec ?? 'none';
  if (codec !== 'none' && codec !== 'deflate' && codec !== 'lz4') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--codec must be none, deflate or lz4, got "${codec}"`);
  const to = addressFlag(values.to, 'to');
  const targetUri = uriFromAddress(values['qemu-uri'], 'qemu-uri');
  const secret = readSecret(values['secret-file']);
  const launchAfter = durationFlag(values['launch-after'], 'launch-after');
  const epochMs = durationFlag(values.epoch, 'epoch') ?? 100;
  const downtimeLimitMs = durationFlag(values['downtime-limit'], 'downtime-limit');
  // A bad policy name is bad usage: said before touching the VM.
  if (values.policy !== undefined && !policyNames().includes(values.policy)) {
    throw new PresyncError(ErrorCodes.BAD_POLICY, `--policy: unknown policy "${values.policy}"; expected one of: ${policyNames().join(', ')}`);
  }
  const bandwidth = bandwidthFlag(values.bandwidth);
  if (values.metrics !== undefined) addressFlag(values.metrics, 'metrics');

  const copyStorage = copyStorageFlags(values, (e) => (values.json ? io.out(jsonLine({ ...e, ts: new Date().toISOString() })) : io.err(`presync: ${diskEventText(e)}\n`)));

  const vm = await attachVm(values.qmp);
  let qemuController: QemuGuestController | undefined;
  let finished = false;
  try {
    qemuController = new QemuGuestController(vm.qmp, { targetUri, afterRelease: values['leave-stopped'] ? 'stopped' : 'quit', ...(copyStorage ? { copyStorage } : {}) });
    await qemuController.prepare();
    const phaseAtMs: Record<string, number> = {};
    // One migration per VM: the lock sits beside its RAM file, as for `presync migrate`.
    // (No guest pid: a QEMU is never SIGSTOPped, so a dead agent's lock has nothing to SIGCONT.)
    const m = migrate({
      image: vm.memPath,
      // Every RAM backend (e.g. one per NUMA node) in the one migration: QEMU skips them all (x-ignore-shared).
      ...(vm.backends && vm.backends.length > 1 ? { segments: vm.backends.map((b) => ({ id: b.id, path: b.memPath })) } : {}),
      to,
      secret,
      controller: qemuController,
      ...(values.policy !== undefined ? { policy: values.policy } : {}),
      ...(bandwidth !== undefined ? { bandwidth } : {}),
      ...(downtimeLimitMs !== undefined ? { downtimeLimit: downtimeLimitMs } : {}),
      ...(launchAfter !== undefined ? { launchAfter } : {}),
      ...(values['launch-when-ready'] === true ? { launchWhenReady: true } : {}),
      epoch: epochMs,
      codec,
      streams: intFlag(values.streams, 'streams', 1, 1, 16),
      ...(values.scan !== undefined ? { scan: scanFlag(values.scan) } : {}),
      ...(values.control !== undefined ? { control: values.control } : {}),
      ...(values.metrics !== undefined ? { metrics: values.metrics } : {}),
      ...(values['metrics-linger'] !== undefined ? { metricsLinger: durationFlag(values['metrics-linger'], 'metrics-linger')! } : {}),
      tls: tlsFromFlags(values),
    });
    // When each phase began (ms since the migration started): where the launch→running time went.
    m.on('phase', (e: { phase: string; atMs: number }) => (phaseAtMs[e.phase] = Math.round(e.atMs * 10) / 10));
    m.on('paused', (e: { atMs: number }) => (phaseAtMs.paused = Math.round(e.atMs * 10) / 10));
    // The result line carries QEMU's own figures: printed here, not by the shared printer.
    const endLine = printMigrationEvents(m, io, values.json === true, { result: false });
    const signals = rollbackOnSignals(m, {
      note: (t) => io.err(`presync: ${t}\n`),
      resumeGuest: () => m.resumeGuestNow(),
      handoverBegan: () => m.handoverBegan,
      bytes: () => ({ presyncBytes: m.status().bytesSent, finalBytes: 0 }),
    });
    let forced = false;
    let r: MigrationResult;
    try {
      r = await Promise.race([m.result, signals.forced.then((x) => ((forced = true), x))]);
    } finally {
      signals.dispose();
    }
    endLine();
    const policyName = m.policy?.name ?? values.policy ?? 'presync';
    const j: QemuMigrationJson = { ...qemuResultJson(r, qemuController, vm), phaseAtMs };
    if (values.out) {
      const workload = basename(vm.memPath);
      const run = runRecord('real', r, { label: `${workload} · ${policyName} (QEMU)`, workload, policy: policyName, seed: null });
      writeResults(
        values.out,
        makeResults({
          kind: 'migration',
          createdBy: `presync qemu migrate ${argv.join(' ')}`,
          params: { qmp: values.qmp, image: vm.memPath, memBytes: vm.memBytes, policy: policyName, epochMs, codec },
          // QEMU's own figures ride along in the summary (the schema keeps extra fields).
          runs: [{ ...run, summary: { ...run.summary, engineDowntimeMs: j.engineDowntimeMs, qemu: j.qemu, phaseAtMs } }],
        }),
      );
    }
    if (values.json) io.out(jsonLine({ ...j, ts: new Date().toISOString() }));
    else {
      io.out(
        r.outcome === 'done'
          ? `migrated: launch→running ${String(j.launchToRunningMs)} ms, downtime ${String(j.downtimeMs)} ms (QEMU), presync ${formatBytes(r.presyncBytes)}, final ${formatBytes(r.finalBytes)}, QEMU stream ${j.qemu.transferredBytes === null ? "—" : formatBytes(j.qemu.transferredBytes)}${diskSummary(j.qemu)}, verified\n`
          : `${r.outcome}: ${r.error?.code}: ${r.error?.message}\n`,
      );
    }
    const code = migrationExitCode(r);
    // The engine did not finish after a second signal: whatever it still holds must not keep the process alive.
    if (forced) setTimeout(() => process.exit(code), 200).unref();
    finished = r.outcome === 'done' || r.outcome === 'in-doubt';
    return code;
  } finally {
    // A migration that failed before its pause (or never started) leaves no mirror running on the source.
    if (!finished) await qemuController?.disks?.cancel().catch(() => undefined);
    vm.qmp.close();
  }
}

/** --copy-storage / --nbd / --copy-mode / --verify-disk → the controller's disk-mirror options, or undefined for shared storage. */
function copyStorageFlags(
  values: { 'copy-storage'?: string; nbd?: string; 'copy-mode'?: string; 'verify-disk'?: boolean },
  onEvent: (e: DiskMirrorEvent) => void,
): { disks: 'all' | string[]; nbd: { host: string; port: number }; copyMode: CopyMode; verify: boolean; onEvent: (e: DiskMirrorEvent) => void } | undefined {
  const cs = values['copy-storage'];
  if (cs === undefined) {
    for (const f of ['nbd', 'copy-mode', 'verify-disk'] as const) {
      if (values[f] !== undefined) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${f} needs --copy-storage all|DISK,… (disks on shared storage need no copy)`);
    }
    return undefined;
  }
  const names = cs.split(',').map((x) => x.trim()).filter((x) => x !== '');
  if (names.length === 0) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, '--copy-storage must be "all" or a comma-separated list of disk names (-drive ids or -blockdev node names)');
  if (values.nbd === undefined) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, '--copy-storage needs --nbd HOST:PORT, the NBD address "presync qemu serve --nbd-listen" serves the target\'s disks on');
  const mode = values['copy-mode'] ?? 'background';
  if (mode !== 'background' && mode !== 'write-blocking') throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--copy-mode must be background or write-blocking, got "${mode}"`);
  return { disks: names.length === 1 && names[0] === 'all' ? 'all' : names, nbd: parseNbdAddress(values.nbd, 'nbd'), copyMode: mode, verify: values['verify-disk'] === true, onEvent };
}

/** The disk part of the one-line summary: empty on shared storage. */
function diskSummary(q: QemuSwitchoverFigures): string {
  if (q.diskCompleteMs === null) return '';
  const check = q.diskVerified === true ? `, disks equal (hashed in ${String(q.diskVerifyMs)} ms)` : '';
  return `, disks mirrored ${q.diskBytes === null ? '—' : formatBytes(q.diskBytes)} (completed in ${q.diskCompleteMs} ms of the pause)${check}`;
}

function diskEventText(e: DiskMirrorEvent): string {
  if (e.event === 'disk-mirror-started') return `mirroring disks ${e.disks.map((d) => `${d.key} (${d.file})`).join(', ')} to NBD ${e.nbd}; the launch waits until they are ready`;
  if (e.event === 'disk-mirror-ready') return `disk mirrors ready after ${e.readyMs} ms (${formatBytes(e.bytes)} copied); guest writes are now copied as they happen`;
  return `disk mirror failed: ${e.error.code}: ${e.error.message}`;
}
