import { TargetAgent } from '../../engine/target-agent.ts';
import { commandHook } from '../../engine/handover-command.ts';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { parseFlags } from '../args.ts';
import { TRANSPORT_FLAGS, addressFlag, durationFlag, jsonLine, readSecret, transportFromFlags } from '../common.ts';
import type { CommandIO } from '../io.ts';

const USAGE =
  'presync serve --listen HOST:PORT (--image PATH | --image-dir DIR) --secret-file F [--on-handover CMD [--handover-grace DURATION]] [--force] [--json] [--tls-cert F --tls-key F [--tls-ca F]]';

export async function serveCommand(argv: string[], io: CommandIO, signal?: AbortSignal): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      listen: { type: 'string' },
      image: { type: 'string' },
      'image-dir': { type: 'string' },
      'secret-file': { type: 'string' },
      'on-handover': { type: 'string' },
      'handover-grace': { type: 'string' },
      force: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      ...TRANSPORT_FLAGS,
    },
    USAGE,
  );
  if (values.help) {
    io.out(`${USAGE}\n\nThe target agent: receives migrations one after another into --image (or, with --image-dir, side by side into DIR/<image id>.img), verifies them, and at handover runs --on-handover (with $PRESYNC_IMAGE set). The handover is confirmed once that command exited 0 or still runs after --handover-grace (default 1s); if it fails before, the source rolls back (PRESYNC_ERR_HANDOVER_HOOK).\n`);
    return 0;
  }
  if ((values.image === undefined) === (values['image-dir'] === undefined)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `exactly one of --image PATH and --image-dir DIR is required\nusage: ${USAGE}`);
  }
  const graceMs = durationFlag(values['handover-grace'], 'handover-grace');
  const listen = addressFlag(values.listen, 'listen');
  const secret = readSecret(values['secret-file']);
  const { transport } = transportFromFlags(values);
  const agent = await TargetAgent.start({
    transport,
    listen,
    ...(values.image !== undefined ? { imagePath: values.image } : { imageDir: values['image-dir']! }),
    secret,
    force: values.force === true,
    ...(values['on-handover'] ? { hook: commandHook(values['on-handover'], graceMs !== undefined ? { graceMs } : {}) } : {}),
    onEvent: (e) => {
      if (values.json) io.out(jsonLine(e));
      else if (e.event === 'session-end') {
        io.err(`presync serve: session ${e.sessionId} ${e.outcome}${e.error ? ` (${e.error.code}: ${e.error.message})` : ''}, ${e.pagesWritten} pages written\n`);
      } else if (e.event === 'session-start') {
        io.err(`presync serve: session ${e.sessionId} from ${e.remote}, image ${e.imageId}${e.resume ? ' (resuming)' : ''}\n`);
      }
    },
  });
  const a = agent.address;
  if (values.json) io.out(jsonLine({ event: 'listening', host: a.host, port: a.port }));
  else io.err(`presync serve: listening on ${a.host}:${a.port}, ${values.image !== undefined ? `image ${values.image}` : `images in ${values['image-dir']}`}\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    signal?.addEventListener('abort', stop, { once: true });
  });
  await agent.close();
  return 0;
}
