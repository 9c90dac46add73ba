import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { controlRequest } from '../../engine/control.ts';
import { parseFlags } from '../args.ts';
import { jsonLine } from '../common.ts';
import type { CommandIO } from '../io.ts';

function controlFlag(argv: string[], usage: string): { control: string; json: boolean } {
  const { values } = parseFlags(argv, { control: { type: 'string' }, json: { type: 'boolean' } }, usage);
  if (!values.control) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--control SOCKET is required\nusage: ${usage}`);
  return { control: values.control, json: values.json === true };
}

export async function launchCommand(argv: string[], io: CommandIO): Promise<number> {
  const { control, json } = controlFlag(argv, 'presync launch --control SOCKET [--json]');
  const st = await controlRequest(control, { cmd: 'launch' });
  io.out(json ? jsonLine(st) : `launched (phase ${String(st.phase)}, ${String(st.stalePages)} pages not yet in sync)\n`);
  return 0;
}

export async function statusCommand(argv: string[], io: CommandIO): Promise<number> {
  const { control, json } = controlFlag(argv, 'presync status --control SOCKET [--json]');
  const st = await controlRequest(control, { cmd: 'status' });
  if (json) io.out(jsonLine(st));
  else {
    io.out(
      `phase ${String(st.phase)}; in sync ${String(st.inSyncPercent)} % (${String(st.inSyncPages)}/${String(st.pageCount)} pages); ` +
        `presync ${String(st.presyncBytes)} B; expected downtime if launched now ${Math.round(Number(st.expectedDowntimeMs))} ms\n`,
    );
  }
  return 0;
}
