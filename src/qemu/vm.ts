/**
 * Launching QEMU VMs whose RAM presync can reach (a shared memory-backend-file),
 * attaching to one that is already running, and describing the target that
 * must be started to receive it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { QmpCommands } from './qmp-commands.ts';
import { QmpClient, QmpCommandError } from './qmp.ts';
import { isBool, isNonNegInt, isString } from './qmp-validate.ts';
import { SerialLog } from './serial.ts';
import { parseQemuArgv, presyncTargetArgs, qemuOptValue } from './command-line.ts';

export type Accel = 'tcg' | 'kvm';

/** Guest RAM: a file presync can read and write (share=on), or plain anonymous RAM (stock baseline). */
export type RamBackend = { kind: 'file'; memPath: string; share?: boolean } | { kind: 'anonymous' };

export interface MachineSpec {
  memBytes: number;
  ram: RamBackend;
  kernel: string;
  initrd?: string;
  append?: string;
  /** Machine type; a versioned one (pc-i440fx-7.2) keeps both ends compatible. Default 'pc'. */
  machine?: string;
  smp?: number;
  /**
   * Default 'tcg'. KVM is only used when asked for: on some hosts /dev/kvm
   * exists but cannot run ordinary guests, so its presence proves nothing.
   */
  accel?: Accel;
}

export interface LaunchOptions extends MachineSpec {
  qmpSocket: string;
  serialLog: string;
  /** Start as a migration target waiting for `migrate-incoming`. */
  incoming?: 'defer';
  /** `-S`: the vCPUs wait for `cont`, also after an incoming migration completes. */
  startPaused?: boolean;
  qemuBinary?: string;
  extraArgs?: string[];
  /**
   * argv that runs QEMU, e.g. `['ip', 'netns', 'exec', 'ns1']` to start it in
   * another network namespace. It must exec QEMU (not fork), so the pid and
   * exit status are QEMU's.
   */
  commandPrefix?: string[];
  /** How long to wait for QMP to come up. */
  startTimeoutMs?: number;
  /**
   * The user's own QEMU command line (binary first), already checked by
   * analyzeTargetCommandLine: started as given plus presync's QMP socket,
   * `-incoming` and `-S`. The machine fields above then only describe it.
   * Its serial log is the user's (`serialLog` is followed, never removed).
   */
  commandLine?: readonly string[];
}

export const RAM_BACKEND_ID = 'ram0';

/** The QEMU command line for `opts` (pure; exported for inspection and for scripts). */
export function buildQemuArgs(opts: LaunchOptions): string[] {
  if (opts.commandLine) {
    // The user's own command line: presync adds only its QMP socket, -incoming and -S.
    const hasS = parseQemuArgv(opts.commandLine).options.some((o) => o.name === 'S');
    return [...opts.commandLine.slice(1), ...presyncTargetArgs({ qmpSocket: opts.qmpSocket, incoming: opts.incoming, addS: opts.startPaused === true && !hasS }), ...(opts.extraArgs ?? [])];
  }
  const args = [...machineArgs(opts), '-qmp', `unix:${qemuOptValue(opts.qmpSocket)},server=on,wait=off`];
  if (opts.incoming) args.push('-incoming', opts.incoming);
  if (opts.startPaused) args.push('-S');
  if (opts.extraArgs) args.push(...opts.extraArgs);
  return args;
}

/**
 * The machine presync builds from a spec (`presync qemu serve --kernel …`),
 * without presync's own QMP socket, -incoming or -S: the same kind of
 * command line a user gives after `--`.
 */
export function machineArgs(opts: MachineSpec & { serialLog: string }): string[] {
  if (!Number.isSafeInteger(opts.memBytes) || opts.memBytes <= 0 || opts.memBytes % (1 << 20) !== 0) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `memBytes must be a positive whole number of MiB, got ${opts.memBytes}`);
  }
  const backend =
    opts.ram.kind === 'file'
      ? `memory-backend-file,id=${RAM_BACKEND_ID},size=${opts.memBytes},mem-path=${qemuOptValue(opts.ram.memPath)},share=${opts.ram.share === false ? 'off' : 'on'}`
      : `memory-backend-ram,id=${RAM_BACKEND_ID},size=${opts.memBytes}`;
  const args = [
    '-accel', opts.accel ?? 'tcg',
    '-machine', `${opts.machine ?? 'pc'},memory-backend=${RAM_BACKEND_ID}`,
    '-m', `${opts.memBytes / (1 << 20)}M`,
    '-object', backend,
    '-smp', String(opts.smp ?? 1),
    // No default devices: no VGA RAM or NIC ROMs to move at switchover, no monitor on stdio.
    '-nodefaults', '-vga', 'none', '-display', 'none', '-no-user-config',
    '-serial', `file:${opts.serialLog}`,
    '-kernel', opts.kernel,
  ];
  if (opts.initrd) args.push('-initrd', opts.initrd);
  if (opts.append) args.push('-append', opts.append);
  return args;
}


export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class Vm {
  readonly qmp: QmpClient;
  readonly serial: SerialLog;
  readonly options: LaunchOptions;
  readonly pid: number;
  /** Resolves when the QEMU process has exited. */
  readonly exited: Promise<VmExit>;
  #child: ChildProcess;
  #stderr: () => string;

  constructor(child: ChildProcess, qmp: QmpClient, serial: SerialLog, options: LaunchOptions, exited: Promise<VmExit>, stderr: () => string) {
    this.#child = child;
    this.qmp = qmp;
    this.serial = serial;
    this.options = options;
    this.pid = child.pid ?? -1;
    this.exited = exited;
    this.#stderr = stderr;
  }

  get hasExited(): boolean {
    return this.#child.exitCode !== null || this.#child.signalCode !== null;
  }

  /** What QEMU printed on stderr (last 64 KiB). */
  get stderr(): string {
    return this.#stderr();
  }

  /** Kills QEMU (SIGKILL unless told otherwise) and waits for it to exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<VmExit> {
    if (!this.hasExited) this.#child.kill(signal);
    const ex = await this.exited;
    this.qmp.close();
    return ex;
  }

  /** Asks QEMU to quit over QMP, falling back to SIGKILL. */
  async shutdown(timeoutMs = 5000): Promise<void> {
    if (!this.hasExited) {
      await Promise.race([this.qmp.quit(timeoutMs).catch(() => {}), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
    }
    if (!this.hasExited) this.#child.kill('SIGKILL');
    await this.exited;
    this.qmp.close();
  }

  /**
   * Lets this process exit while QEMU goes on running (a migrated guest
   * outlives the agent that received it): drops the QMP connection and the
   * handles that would keep Node's event loop alive.
   */
  async detach(): Promise<void> {
    this.qmp.close();
    await this.serial.close();
    this.#child.stderr?.destroy();
    this.#child.unref();
  }

  /** Kills QEMU, stops following the serial log, removes the QMP socket (the RAM file and log are the caller's). */
  async dispose(): Promise<void> {
    await this.kill();
    await this.serial.close();
    await rm(this.options.qmpSocket, { force: true });
  }
}

/** How long a failed QMP connection waits for QEMU's own exit before it is reported as the cause. */
const STARTUP_EXIT_GRACE_MS = 2_000;

export async function launchVm(opts: LaunchOptions): Promise<Vm> {
  const args = buildQemuArgs(opts);
  await rm(opts.qmpSocket, { force: true });
  if (!opts.commandLine) await rm(opts.serialLog, { force: true });
  const binary = opts.commandLine?.[0] ?? opts.qemuBinary ?? 'qemu-system-x86_64';
  const argv = [...(opts.commandPrefix ?? []), binary, ...args];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    stderr = (stderr + d).slice(-65536);
  });
  // 'close', not 'exit': it comes once stderr has been read to the end, so a
  // startup failure is reported with all QEMU said.
  const exited = new Promise<VmExit>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  let notStarted = false;
  const spawnFailed = new Promise<never>((_, reject) => {
    child.once('error', (e) => {
      notStarted = true;
      reject(new PresyncError(ErrorCodes.QEMU, `cannot start ${binary}: ${e.message}`, { cause: e }));
    });
  });
  const startupExit = (ex: VmExit): PresyncError =>
    new PresyncError(ErrorCodes.QEMU, `QEMU exited during startup (code ${ex.code}, signal ${ex.signal}): ${stderr.trim() || 'no stderr'}`);
  const diedEarly = exited.then((ex): never => {
    throw startupExit(ex);
  });
  let qmp: QmpClient;
  const abort = new AbortController();
  const connecting = QmpClient.connect(opts.qmpSocket, { connectTimeoutMs: opts.startTimeoutMs ?? 15_000, signal: abort.signal });
  try {
    qmp = await Promise.race([connecting, spawnFailed, diedEarly]);
  } catch (e) {
    abort.abort();
    void connecting.then((c) => c.close(), () => {});
    // A QEMU that fails at startup may reset the QMP connection before its
    // exit is seen: when it does exit, that (with its stderr) is the news.
    if (!notStarted) {
      let timer: NodeJS.Timeout | undefined;
      const ex = await Promise.race([exited, new Promise<null>((r) => (timer = setTimeout(() => r(null), STARTUP_EXIT_GRACE_MS)))]);
      clearTimeout(timer);
      if (ex) throw startupExit(ex);
    }
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    throw e;
  } finally {
    diedEarly.catch(() => {});
    spawnFailed.catch(() => {});
  }
  return new Vm(child, qmp, new SerialLog(opts.serialLog), opts, exited, () => stderr);
}

/** A RAM backend of a running VM that presync can sync: a shared file. */
export interface VmRamBackend {
  readonly id: string;
  /** Absolute path on the VM's host. */
  readonly memPath: string;
  readonly bytes: number;
}

/** What presync needs to know about a running VM, read over QMP. */
export interface VmDescription {
  /** The guest's RAM: every backend's size together. */
  memBytes: number;
  /** The (first) RAM file presync syncs; absolute path on the VM's host. */
  memPath: string;
  backendId: string;
  /** Every RAM backend, the machine's memory-backend first (absent in descriptions made by hand: the one at memPath). */
  backends?: readonly VmRamBackend[];
  machine: string;
  smp: number;
  kernel: string;
  initrd: string;
  append: string;
  accel: Accel;
}

export interface AttachedVm extends VmDescription {
  qmp: QmpClient;
}

/**
 * Connects to a running VM and checks that its RAM is a shared file backend
 * (otherwise presync cannot see or write its pages). Throws PRESYNC_ERR_QEMU
 * with what to change on the QEMU command line if not. A QMP socket serves
 * one client at a time: give QEMU a second `-qmp` for presync if something
 * else (libvirt, a launcher) holds the first.
 */
export async function attachVm(qmpSocketPath: string, opts: { connectTimeoutMs?: number } = {}): Promise<AttachedVm> {
  const qmp = await QmpClient.connect(qmpSocketPath, { connectTimeoutMs: opts.connectTimeoutMs ?? 5000 });
  try {
    return { qmp, ...(await describeVm(qmp)) };
  } catch (e) {
    qmp.close();
    throw e;
  }
}

export async function describeVm(qmp: QmpClient): Promise<VmDescription> {
  const qomGet = qomGetter(qmp);
  const backends = await ramBackends(qmp);
  const type = await qomGet('/machine', 'type');
  const smp = await qomGet('/machine', 'smp');
  const str = async (p: string) => {
    const v = await qomGet('/machine', p);
    return isString(v) ? v : '';
  };
  let accel: Accel = 'tcg';
  try {
    const kvm = await qmp.execute('query-kvm');
    if (typeof kvm === 'object' && kvm !== null && (kvm as { enabled?: unknown }).enabled === true) accel = 'kvm';
  } catch (e) {
    if (!(e instanceof QmpCommandError)) throw e;
  }
  return {
    memBytes: backends.reduce((n, b) => n + b.bytes, 0),
    memPath: backends[0].memPath,
    backendId: backends[0].id,
    backends,
    machine: isString(type) ? type.replace(/-machine$/, '') : 'pc',
    smp: typeof smp === 'object' && smp !== null && !Array.isArray(smp) && isNonNegInt(smp.cpus) ? smp.cpus : 1,
    kernel: await str('kernel'),
    initrd: await str('initrd'),
    append: await str('append'),
    accel,
  };
}

function qomGetter(qmp: QmpClient): (path: string, property: string) => Promise<QmpCommands['qom-get']['ret'] | undefined> {
  return async (path, property) => {
    try {
      return await qmp.execute('qom-get', { path, property });
    } catch (e) {
      if (e instanceof QmpCommandError) return undefined;
      throw e;
    }
  };
}

/** The -object option that gives QEMU a RAM backend presync can sync. */
function fileBackendFix(id: string, bytes?: number): string {
  return `-object memory-backend-file,id=${id},size=${bytes ?? '<ram>'},mem-path=/dev/shm/<file>,share=on`;
}

/**
 * Every RAM backend of a running VM (query-memdev; the machine's
 * memory-backend first, then the others, e.g. NUMA nodes' memdevs, in
 * QEMU's order), each read with qom-get (type, mem-path, share). With
 * x-ignore-shared QEMU skips every shared backend, so presync must sync all
 * of them: a backend that is not a shared file (memory-backend-ram,
 * memory-backend-memfd, share=off), or RAM outside any backend (QEMU's
 * implicit pc.ram), is refused with PRESYNC_ERR_QEMU naming the option to add.
 */
export async function ramBackends(qmp: QmpClient): Promise<VmRamBackend[]> {
  const qomGet = qomGetter(qmp);
  const whole = `start QEMU with ${fileBackendFix(RAM_BACKEND_ID)} -machine memory-backend=${RAM_BACKEND_ID} (or one such backend per NUMA node, -numa node,memdev=ID)`;
  const machineBackend = await qomGet('/machine', 'memory-backend');
  const machineId = isString(machineBackend) ? machineBackend.replace(/^\/objects\//, '') : '';
  const memdevs = await qmp.execute('query-memdev');
  if (memdevs.length === 0) throw new PresyncError(ErrorCodes.QEMU, `the VM's RAM is not a memory backend object (QEMU's own anonymous RAM); ${whole}`);
  // The machine's backend first, the others by id: QEMU lists them in no useful order, and the target maps them by id anyway.
  const others = memdevs.filter((m) => m.id !== machineId).sort((a, b) => ((a.id ?? '') < (b.id ?? '') ? -1 : (a.id ?? '') > (b.id ?? '') ? 1 : 0));
  const ordered = [...memdevs.filter((m) => m.id === machineId), ...others];
  const out: VmRamBackend[] = [];
  for (const m of ordered) {
    const id = m.id;
    if (id === undefined || id === '') throw new PresyncError(ErrorCodes.QEMU, `the VM has a RAM backend without an id; give every -object memory-backend-file an id`);
    const path = `/objects/${id}`;
    const memPath = await qomGet(path, 'mem-path');
    if (!isString(memPath) || memPath === '') {
      const type = await qomGet(path, 'type');
      const what = isString(type) ? `a ${type}` : 'anonymous memory';
      // The machine's own RAM (plain -m makes an implicit memory-backend-ram, pc.ram) is fixed with a backend of presync's usual id.
      const fix = id === machineId ? `start QEMU with ${fileBackendFix(RAM_BACKEND_ID, m.size)} -machine memory-backend=${RAM_BACKEND_ID}` : `replace it with ${fileBackendFix(id, m.size)}`;
      throw new PresyncError(ErrorCodes.QEMU, `the VM's RAM backend ${id} is ${what}, not a memory-backend-file presync can read; ${fix}`);
    }
    const share = m.share ?? (await qomGet(path, 'share'));
    if (!isBool(share) || !share) {
      throw new PresyncError(ErrorCodes.QEMU, `the VM's RAM backend ${id} (${memPath}) is not shared, so its pages never reach the file; add share=on: ${fileBackendFix(id, m.size).replace('/dev/shm/<file>', memPath)}`);
    }
    if (!isNonNegInt(m.size) || m.size === 0) throw new PresyncError(ErrorCodes.QMP, `cannot read the size of RAM backend ${id}`);
    out.push({ id, memPath, bytes: m.size });
  }
  // RAM in no backend at all (neither -machine memory-backend nor NUMA memdevs): QEMU's implicit anonymous pc.ram.
  const sizes = (await qmp.execute('query-memory-size-summary').catch((e: unknown) => {
    if (e instanceof QmpCommandError) return undefined;
    throw e;
  })) as { 'base-memory'?: unknown } | undefined;
  const base = sizes?.['base-memory'];
  const inBackends = out.reduce((n, b) => n + b.bytes, 0);
  if (isNonNegInt(base) && inBackends < base) {
    throw new PresyncError(ErrorCodes.QEMU, `${base - inBackends} B of the VM's RAM is in no memory backend (QEMU's own anonymous RAM); ${whole}`);
  }
  return out;
}

/**
 * Launch options for a target that can receive `source`: same machine type,
 * CPUs, RAM size and backend id (migration matches RAM blocks by id), its own
 * RAM file (on one host it must be a different file), waiting with `-incoming defer`.
 */
export function matchingTargetOptions(
  source: VmDescription | MachineSpec,
  target: { memPath: string; qmpSocket: string; serialLog: string; accel?: Accel; qemuBinary?: string; extraArgs?: string[]; commandPrefix?: string[] },
): LaunchOptions {
  const isDesc = 'memPath' in source;
  if (isDesc && source.backends && source.backends.length > 1) {
    throw new PresyncError(ErrorCodes.QEMU, `the source VM has ${source.backends.length} RAM backends (${source.backends.map((b) => b.id).join(', ')}); start its target from a command line with the same backends (presync qemu serve -- qemu-system-x86_64 …)`);
  }
  if (isDesc && source.backendId !== RAM_BACKEND_ID) {
    throw new PresyncError(ErrorCodes.QEMU, `the source's RAM backend is "${source.backendId}"; a matching target must use the same id, start the source with id=${RAM_BACKEND_ID}`);
  }
  const spec: MachineSpec = isDesc
    ? {
        memBytes: source.memBytes,
        ram: { kind: 'file', memPath: source.memPath },
        kernel: source.kernel,
        initrd: source.initrd || undefined,
        append: source.append || undefined,
        machine: source.machine,
        smp: source.smp,
        accel: source.accel,
      }
    : source;
  return {
    ...spec,
    ram: spec.ram.kind === 'file' ? { kind: 'file', memPath: target.memPath, share: true } : { kind: 'anonymous' },
    accel: target.accel ?? spec.accel,
    qmpSocket: target.qmpSocket,
    serialLog: target.serialLog,
    incoming: 'defer',
    qemuBinary: target.qemuBinary,
    extraArgs: target.extraArgs,
    commandPrefix: target.commandPrefix,
  };
}
