#!/usr/bin/env node
import { isPresyncError, toPresyncError, ErrorCodes } from '../core/errors.ts';
import type { CommandIO } from './io.ts';
import { processIO } from './io.ts';
import { EXIT_CODES } from './exit-codes.ts';

type Command = (argv: string[], io: CommandIO) => Promise<number>;

/** Subcommands load lazily so `presync demo` does not pay for QEMU or sockets. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  demo: { summary: 'simulate the embedded default scenario and print a table', load: async () => (await import('./commands/demo.ts')).demoCommand },
  serve: { summary: 'target agent: receive migrations into an image', load: async () => (await import('./commands/serve.ts')).serveCommand },
  migrate: { summary: 'source agent: pre-synchronize an image and migrate it', load: async () => (await import('./commands/migrate.ts')).migrateCommand },
  launch: { summary: 'say "go" to a running migrate, now or --when-ready (--control SOCKET)', load: async () => (await import('./commands/control.ts')).launchCommand },
  status: { summary: 'live figures of a running migrate (--control SOCKET)', load: async () => (await import('./commands/control.ts')).statusCommand },
  abort: { summary: 'roll a running migrate back; the guest stays on the source (--control SOCKET)', load: async () => (await import('./commands/control.ts')).abortCommand },
  set: { summary: 'change a running migrate\'s --bandwidth or --downtime-limit (--control SOCKET)', load: async () => (await import('./commands/control.ts')).setCommand },
  qemu: { summary: 'migrate a running QEMU VM: "qemu serve" (target) and "qemu migrate" (source)', load: async () => (await import('./commands/qemu.ts')).qemuCommand },
  report: { summary: 'one self-contained HTML report with charts from results files (--out of benches and migrations)', load: async () => (await import('./commands/report.ts')).reportCommand },
  trace: { summary: 'record a dirty-page trace from a live image ("trace record") or simulate policies on one ("trace replay")', load: async () => (await import('./commands/trace.ts')).traceCommand },
  faults: { summary: 'run the fault matrix: every fault case must leave the guest running once, whole', load: async () => (await import('./commands/faults.ts')).faultsCommand },
  bench: { summary: 'benchmarks: "bench paper" reproduces the paper\'s table in the simulator', load: async () => (await import('./commands/bench-paper.ts')).benchCommand },
};


function usage(): string {
  const lines = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(14)}${c.summary}`);
  return `usage: presync <command> [flags]\n       presync --version\n\ncommands:\n${lines.join('\n')}\n\nRun "presync <command> --help" for a command's flags.\n\n${EXIT_CODES}`;
}

/** Runs a command's --help and adds the examples and exit statuses it does not print itself. */
async function withHelpFooter(name: string, rest: string[], io: CommandIO, cmd: { load: () => Promise<Command> }): Promise<number> {
  let text = '';
  const code = await (await cmd.load())(rest, { out: (t) => ((text += t), io.out(t)), err: io.err });
  if (code === 0 && !text.includes('Exit status')) {
    const sub = rest[0] !== undefined && !rest[0].startsWith('-') ? `${name} ${rest[0]}` : name;
    const { examplesFor } = await import('./help-examples.ts');
    io.out(`${examplesFor(sub) || examplesFor(name)}\n${EXIT_CODES}`);
  }
  return code;
}

export async function run(argv: string[], io: CommandIO = processIO): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V' || name === 'version') {
    io.out((await import('./version.ts')).versionLine());
    return 0;
  }
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.out(usage());
    return name === undefined ? 2 : 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    io.err(`presync: unknown command "${name}"\n${usage()}`);
    return 2;
  }
  try {
    if (rest.includes('--help') || rest.includes('-h')) return await withHelpFooter(name, rest, io, cmd);
    return await (await cmd.load())(rest, io);
  } catch (e) {
    const err = toPresyncError(e);
    // Expected failures get one line; only internal errors show a stack.
    if (isPresyncError(e) && err.code !== ErrorCodes.INTERNAL) {
      io.err(`presync ${name}: ${err.code}: ${err.message}\n`);
    } else {
      io.err(`presync ${name}: ${err.code}: ${err.message}\n${e instanceof Error && e.stack ? e.stack + '\n' : ''}`);
    }
    // Bad usage (a flag, a value, an unknown policy) is 2; anything else that stops a command is 1.
    return err.code === ErrorCodes.BAD_ARGUMENT || err.code === ErrorCodes.BAD_POLICY || err.code === ErrorCodes.QEMU_CMDLINE ? 2 : 1;
  }
}

const invokedDirectly = process.argv[1] !== undefined && /(?:^|[\\/])(?:main\.(?:ts|js)|presync(?:\.js)?)$/.test(process.argv[1]);
if (invokedDirectly) {
  const code = await run(process.argv.slice(2));
  process.exitCode = code;
  // A finished command exits once its output is out. Left to Node's own
  // shutdown, `qemu migrate --leave-stopped` sometimes spun for minutes in
  // its handle cleanup after printing the result (1 run in 3 here).
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  process.exit(code);
}

function flushed(s: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => s.write('', () => resolve()));
}
