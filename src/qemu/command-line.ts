/**
 * The user's own QEMU command line, read the way QEMU reads it: which RAM
 * backends the guest has, and whether presync can start it as a migration
 * target (`presync qemu serve -- qemu-system-x86_64 ARGS…`). Pure: no file
 * system, no processes.
 *
 * presync syncs guest RAM through files, so every RAM backend must be a
 * `memory-backend-file` with a `mem-path` and `share=on`. Anonymous RAM
 * (`-m` alone, `memory-backend-ram`, `-numa node,mem=`, legacy `-mem-path`
 * which maps privately) is refused with the option to add. A
 * `memory-backend-memfd` is refused too: its memory is tmpfs like /dev/shm,
 * but it has no name presync can open on the source host (only QEMU's own
 * file descriptor), so the same memory as a named file in /dev/shm is asked for.
 */
import { ErrorCodes, PresyncError } from '../core/errors.ts';

/** One option as QEMU sees it: `-name value` or `--name value`, or a bare flag. */
export interface QemuOption {
  /** Without the leading dashes: `object`, `machine`, `S`. */
  readonly name: string;
  readonly value: string | undefined;
}

export interface QemuArgv {
  readonly binary: string;
  readonly options: readonly QemuOption[];
  /** Arguments that are not options (QEMU takes one as `-hda`). */
  readonly positionals: readonly string[];
}

/** A memory backend object on the command line. */
export interface MemoryBackend {
  readonly id: string;
  /** `memory-backend-file`, `memory-backend-ram`, `memory-backend-memfd`, … */
  readonly qomType: string;
  /** Bytes, or null if the option did not say. */
  readonly size: number | null;
  readonly memPath: string | null;
  readonly share: boolean;
}

/** What presync needs to know to start this command line as a migration target. */
export interface TargetCommandLine {
  readonly binary: string;
  /** The user's arguments, untouched (without the binary). */
  readonly args: readonly string[];
  /**
   * Every RAM backend the guest uses, each a shared file: the machine's
   * `memory-backend`, else the NUMA nodes' `memdev`s, then any other
   * memory backend objects (DIMMs), in command-line order.
   */
  readonly backends: readonly MemoryBackend[];
  /** Guest RAM in bytes (the sum of the backends). */
  readonly memBytes: number;
  /** `-machine` type, if given. */
  readonly machine: string | undefined;
  /** The command line already has `-S`. */
  readonly startPaused: boolean;
  /** `-serial file:PATH`, the first one, if any (so serve can say where the console goes). */
  readonly serialFile: string | undefined;
}

/**
 * QEMU 7.2's options that take no argument (qemu-options.hx entries without
 * HAS_ARG). Every other option takes exactly one, as in QEMU.
 */
const NO_ARG = new Set([
  'h', 'help', 'version', 'S', 's', 'nodefaults', 'no-user-config', 'nodefconfig', 'snapshot', 'nographic', 'no-frame',
  'alt-grab', 'ctrl-grab', 'no-quit', 'sdl', 'curses', 'portrait', 'full-screen', 'win2k-hack', 'rtc-td-hack',
  'no-fd-bootchk', 'no-acpi', 'no-hpet', 'enable-kvm', 'no-kvm', 'no-kvm-irqchip', 'no-kvm-pit-reinjection',
  'xen-attach', 'xen-domid-restrict', 'no-reboot', 'no-shutdown', 'daemonize', 'only-migratable', 'enable-sync-profile',
  'singlestep', 'mem-prealloc', 'usb', 'audio-help', 'async-teardown', 'preconfig', 'semihosting', 'old-param',
  'show-cursor', 'enable-fips', 'perfmap', 'jitdump', 'no-graphic',
]);

/** Options presync adds or that would take the target out of its hands. */
const CONFLICTS: Readonly<Record<string, string>> = {
  incoming: 'remove -incoming: presync starts the target QEMU with -incoming defer itself and issues migrate-incoming on --qemu-listen',
  daemonize: 'remove -daemonize: presync starts the target QEMU as its own child, to watch it and to stop it after a failed attempt',
  preconfig: 'remove -preconfig: presync needs a target QEMU that waits for the incoming migration, not for x-exit-preconfig',
  loadvm: 'remove -loadvm: the target QEMU receives its state from the source VM, not from a snapshot',
  readconfig: 'put the options of -readconfig on the command line: presync must see every RAM backend to check it',
};

function refuse(what: string): never {
  throw new PresyncError(ErrorCodes.QEMU_CMDLINE, what);
}

/** Splits argv (binary first) into options the way QEMU's own parser does. */
export function parseQemuArgv(argv: readonly string[]): QemuArgv {
  const [binary, ...rest] = argv;
  if (binary === undefined || binary === '') refuse('no QEMU command after "--"; give one, e.g. -- qemu-system-x86_64 -machine pc,memory-backend=ram0 …');
  if (binary.startsWith('-')) refuse(`the command after "--" must start with the QEMU binary (e.g. qemu-system-x86_64), not the option ${binary}`);
  const options: QemuOption[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (!a.startsWith('-') || a === '-') {
      positionals.push(a);
      continue;
    }
    const name = a.replace(/^--?/, '');
    if (NO_ARG.has(name)) {
      options.push({ name, value: undefined });
      continue;
    }
    const value = rest[i + 1];
    if (value === undefined) refuse(`QEMU option ${a} needs a value`);
    options.push({ name, value });
    i++;
  }
  return { binary, options, positionals };
}

/**
 * A QemuOpts/keyval list, `[implied=]v1,k2=v2,…`, with `,,` for a literal
 * comma. A bare later key means `key=on`, as QEMU reads it.
 */
export function parseKeyValues(text: string, impliedKey?: string): Map<string, string> {
  const items: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c !== ',') cur += c;
    else if (text[i + 1] === ',') {
      cur += ',';
      i++;
    } else {
      items.push(cur);
      cur = '';
    }
  }
  items.push(cur);
  const out = new Map<string, string>();
  items.forEach((item, idx) => {
    const eq = item.indexOf('=');
    if (eq >= 0) out.set(item.slice(0, eq), item.slice(eq + 1));
    else if (idx === 0 && impliedKey !== undefined) out.set(impliedKey, item);
    else if (item !== '') out.set(item, 'on');
  });
  return out;
}

/** QEMU's size syntax: `1G`, `512M`, `1.5G`, `4096` (in `defaultUnit`). */
export function parseQemuSize(text: string, defaultUnit: 'B' | 'M' = 'B'): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgtpe]?)\s*$/i.exec(text);
  if (!m) return null;
  const shift: Record<string, number> = { B: 0, K: 10, M: 20, G: 30, T: 40, P: 50, E: 60 };
  const unit = (m[2] || defaultUnit).toUpperCase();
  const bytes = Number(m[1]) * 2 ** shift[unit];
  return Number.isSafeInteger(bytes) ? bytes : null;
}

function qemuBool(v: string | boolean | undefined): boolean {
  if (typeof v === 'boolean') return v;
  return v !== undefined && ['on', 'yes', 'true', 'y'].includes(v.toLowerCase());
}

/** `-object` in either form: keyval (`memory-backend-file,id=…`) or JSON (`{"qom-type":…}`). */
function objectProps(value: string): Map<string, string | boolean | number> {
  if (value.trimStart().startsWith('{')) {
    let o: unknown;
    try {
      o = JSON.parse(value);
    } catch {
      refuse(`-object ${value.slice(0, 60)}: not valid JSON`);
    }
    if (typeof o !== 'object' || o === null || Array.isArray(o)) refuse(`-object ${value.slice(0, 60)}: not a JSON object`);
    const m = new Map<string, string | boolean | number>();
    for (const [k, v] of Object.entries(o)) if (typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number') m.set(k, v);
    return m;
  }
  return parseKeyValues(value, 'qom-type');
}

function backendOf(props: Map<string, string | boolean | number>): MemoryBackend | undefined {
  const qomType = props.get('qom-type');
  if (typeof qomType !== 'string' || !qomType.startsWith('memory-backend-')) return undefined;
  const id = props.get('id');
  if (typeof id !== 'string' || id === '') refuse(`-object ${qomType} has no id; add id=ram0`);
  const size = props.get('size');
  const memPath = props.get('mem-path');
  const share = props.get('share');
  return {
    id,
    qomType,
    size: typeof size === 'number' ? size : typeof size === 'string' ? parseQemuSize(size) : null,
    memPath: typeof memPath === 'string' && memPath !== '' ? memPath : null,
    share: qemuBool(typeof share === 'number' ? undefined : share),
  };
}

function humanSize(bytes: number): string {
  for (const [u, s] of [['G', 30], ['M', 20]] as const) if (bytes % 2 ** s === 0) return `${bytes / 2 ** s}${u}`;
  return String(bytes);
}

/** The option that makes `id` a shared file backend, for the error messages. */
function fileBackendHint(id: string, size: number | null): string {
  return `-object memory-backend-file,id=${id},size=${size === null ? 'SIZE' : humanSize(size)},mem-path=/dev/shm/NAME.ram,share=on`;
}

/** Refuses a backend presync cannot read and write through a file, naming the option to add. */
function checkBackend(b: MemoryBackend): void {
  if (b.qomType === 'memory-backend-ram' || b.qomType === 'memory-backend-epc') {
    refuse(`RAM backend ${b.id} is ${b.qomType}, anonymous memory presync cannot reach; make it ${fileBackendHint(b.id, b.size)}`);
  }
  if (b.qomType === 'memory-backend-memfd') {
    refuse(`RAM backend ${b.id} is memory-backend-memfd, which has no path presync can open; make it ${fileBackendHint(b.id, b.size)} (the same tmpfs memory, with a name)`);
  }
  if (b.qomType !== 'memory-backend-file') refuse(`RAM backend ${b.id} is ${b.qomType}; presync syncs only memory-backend-file: make it ${fileBackendHint(b.id, b.size)}`);
  if (b.memPath === null) refuse(`RAM backend ${b.id} has no mem-path; add mem-path=/dev/shm/NAME.ram to its -object`);
  if (!b.share) refuse(`RAM backend ${b.id} (${b.memPath}) is not shared (share=off is QEMU's default), so the guest's writes never reach the file; add share=on to -object memory-backend-file,id=${b.id}`);
  if (b.size === null || b.size <= 0) refuse(`RAM backend ${b.id} has no size; add size=… (the guest's RAM, e.g. size=1G) to its -object`);
  if (b.size % 4096 !== 0) refuse(`RAM backend ${b.id}: size=${b.size} is not a whole number of 4 KiB pages`);
}

/** The last value of an option QEMU merges (`-machine`, `-m`), as one map. */
function merged(opts: readonly QemuOption[], names: readonly string[], implied: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const o of opts) if (names.includes(o.name) && o.value !== undefined) for (const [k, v] of parseKeyValues(o.value, implied)) out.set(k, v);
  return out;
}

/**
 * Reads a QEMU command line (binary first) and checks that presync can start
 * it as a migration target: every RAM backend a shared file, nothing that
 * conflicts with `-incoming defer`. Throws PRESYNC_ERR_QEMU_CMDLINE, one line
 * naming the option to add or remove.
 */
export function analyzeTargetCommandLine(argv: readonly string[]): TargetCommandLine {
  const parsed = parseQemuArgv(argv);
  const opts = parsed.options;
  for (const o of opts) {
    const why = CONFLICTS[o.name];
    if (why) refuse(why);
  }
  const backends: MemoryBackend[] = [];
  for (const o of opts) {
    if (o.name !== 'object' || o.value === undefined) continue;
    const b = backendOf(objectProps(o.value));
    if (b) backends.push(b);
  }
  const machine = merged(opts, ['machine', 'M'], 'type');
  const mem = merged(opts, ['m'], 'size');
  const mSize = mem.has('size') ? parseQemuSize(mem.get('size')!, 'M') : null;
  if (mem.has('size') && mSize === null) refuse(`-m ${mem.get('size')}: not a size QEMU reads (e.g. -m 1G)`);
  const ramHint = `add ${fileBackendHint('ram0', mSize ?? 128 << 20)} -machine memory-backend=ram0`;
  if (opts.some((o) => o.name === 'mem-path')) refuse(`-mem-path maps the guest's RAM privately, so presync cannot see its writes; replace it with ${fileBackendHint('ram0', mSize ?? 128 << 20)} -machine memory-backend=ram0`);

  const byId = new Map(backends.map((b) => [b.id, b]));
  const used: string[] = [];
  const mainId = machine.get('memory-backend');
  const numaNodes = opts.filter((o) => o.name === 'numa' && o.value !== undefined).map((o) => parseKeyValues(o.value!, 'type')).filter((kv) => kv.get('type') === 'node');
  if (mainId !== undefined) used.push(mainId);
  for (const node of numaNodes) {
    const memdev = node.get('memdev');
    if (memdev === undefined) {
      if (mainId !== undefined) continue;
      refuse(`-numa node${node.has('nodeid') ? `,nodeid=${node.get('nodeid')}` : ''} has no memdev, so its RAM is anonymous; give every -numa node memdev=ID of a ${fileBackendHint('ID', null)}`);
    }
    used.push(memdev);
  }
  if (used.length === 0) refuse(`the guest's RAM is anonymous (${mSize === null ? 'no -m' : `-m ${mem.get('size')}`} without a memory backend), so presync cannot reach it; ${ramHint}`);
  for (const id of used) {
    if (!byId.has(id)) refuse(`${id === mainId ? `-machine memory-backend=${id}` : `-numa node,memdev=${id}`} names no -object with id=${id}; add ${fileBackendHint(id, mSize)}`);
  }
  // Anonymous RAM anywhere is refused: also a backend only a DIMM uses, or one not used yet.
  for (const b of backends) checkBackend(b);
  const ordered = [...new Set(used)].map((id) => byId.get(id)!).concat(backends.filter((b) => !used.includes(b.id)));
  const mainBytes = [...new Set(used)].reduce((s, id) => s + (byId.get(id)!.size ?? 0), 0);
  if (mSize !== null && mSize !== mainBytes) {
    refuse(`-m ${mem.get('size')} does not match the RAM backend${used.length > 1 ? 's' : ''} (${used.join(', ')}: ${humanSize(mainBytes)}); make them equal`);
  }
  const paths = new Map<string, string>();
  for (const b of ordered) {
    const other = paths.get(b.memPath!);
    if (other !== undefined) refuse(`RAM backends ${other} and ${b.id} share mem-path ${b.memPath}; give each its own file`);
    paths.set(b.memPath!, b.id);
  }
  const serial = opts.find((o) => o.name === 'serial' && o.value?.startsWith('file:'));
  return {
    binary: parsed.binary,
    args: argv.slice(1),
    backends: ordered,
    memBytes: ordered.reduce((s, b) => s + b.size!, 0),
    machine: machine.get('type'),
    startPaused: opts.some((o) => o.name === 'S'),
    serialFile: serial?.value?.slice('file:'.length),
  };
}

/** Commas inside a QEMU option value are doubled. */
export function qemuOptValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/**
 * What presync adds to a target's command line, and only that: its own QMP
 * socket (any the user gave stay), `-incoming defer`, and `-S` so the guest
 * runs only when presync says so.
 */
export function presyncTargetArgs(o: { qmpSocket: string; incoming?: 'defer'; addS: boolean }): string[] {
  return ['-qmp', `unix:${qemuOptValue(o.qmpSocket)},server=on,wait=off`, ...(o.incoming ? ['-incoming', o.incoming] : []), ...(o.addS ? ['-S'] : [])];
}
