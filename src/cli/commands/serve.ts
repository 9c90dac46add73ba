import { serve } from '../../api/serve.ts';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { parseFlags } from '../args.ts';
import { TRANSPORT_FLAGS, addressFlag, durationFlag, jsonLine, readSecret, tlsFromFlags } from '../common.ts';
import { EXIT_CODES } from '../exit-codes.ts';
import type { CommandIO } from '../io.ts';

const USAGE =
  'presync serve --listen HOST:PORT (--image PATH | --image-dir DIR) --secret-file F [--on-handover CMD [--handover-grace DURATION]] [--force] [--metrics HOST:PORT] [--json] [--tls-cert F --tls-key F [--tls-ca F]]';

const HELP = `${USAGE}

The target agent: receives migrations one after another into --image (or, with
--image-dir, side by side into DIR/<image id>.img), verifies them, and at handover
runs --on-handover (with $PRESYNC_IMAGE set). The handover is confirmed once that
command exited 0 or still runs after --handover-grace (default 1s); if it fails
before, the source rolls back (PRESYNC_ERR_HANDOVER_HOOK). It runs until SIGINT or
SIGTERM; a peer's failure never stops it.

  --metrics HOST:PORT   serve Prometheus metrics on http://HOST:PORT/metrics
  --json                one event per line on stdout, each with "event" and "ts"

Examples:
  presync serve --listen 0.0.0.0:7070 --image /dev/shm/app.img --secret-file secret \\
    --on-handover 'exec my-app --state "$PRESYNC_IMAGE"'
  presync serve --listen 0.0.0.0:7070 --image-dir /var/lib/presync --secret-file secret \\
    --metrics 0.0.0.0:9464 --json

${EXIT_CODES}`;

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
      metrics: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      ...TRANSPORT_FLAGS,
    },
    USAGE,
  );
  if (values.help) {
    io.out(HELP);
    return 0;
  }
  if ((values.image === undefined) === (values['image-dir'] === undefined)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `exactly one of --image PATH and --image-dir DIR is required\nusage: ${USAGE}`);
  }
  if (values.bandwidth !== undefined) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--bandwidth limits what the source sends: give it to "presync migrate"\nusage: ${USAGE}`);
  const graceMs = durationFlag(values['handover-grace'], 'handover-grace');
  const listen = addressFlag(values.listen, 'listen');
  if (values.metrics !== undefined) addressFlag(values.metrics, 'metrics');
  const secret = readSecret(values['secret-file']);
  const server = await serve({
    listen,
    ...(values.image !== undefined ? { image: values.image } : { imageDir: values['image-dir']! }),
    secret,
    force: values.force === true,
    ...(values['on-handover'] ? { onHandover: values['on-handover'] } : {}),
    ...(graceMs !== undefined ? { handoverGrace: graceMs } : {}),
    ...(values.metrics !== undefined ? { metrics: values.metrics } : {}),
    tls: tlsFromFlags(values),
  });
  server.on('event', (e: { event: string; ts: string } & Record<string, unknown>) => {
    if (values.json) io.out(jsonLine(e));
    else if (e.event === 'session-end') {
      const err = e.error as { code: string; message: string } | null;
      io.err(`presync serve: session ${String(e.sessionId)} ${String(e.outcome)}${err ? ` (${err.code}: ${err.message})` : ''}, ${String(e.pagesWritten)} pages written\n`);
    } else if (e.event === 'session-start') {
      io.err(`presync serve: session ${String(e.sessionId)} from ${String(e.remote)}, image ${String(e.imageId)}${e.resume === true ? ' (resuming)' : ''}\n`);
    }
  });
  const a = server.address;
  const ts = new Date().toISOString();
  const m = server.metricsAddress;
  if (values.json) {
    io.out(jsonLine({ event: 'listening', ts, host: a.host, port: a.port }));
    if (m) io.out(jsonLine({ event: 'metrics', ts, host: m.host, port: m.port }));
  } else {
    io.err(`presync serve: listening on ${a.host}:${a.port}, ${values.image !== undefined ? `image ${values.image}` : `images in ${values['image-dir']}`}\n`);
    if (m) io.err(`presync serve: metrics on http://${m.host}:${m.port}/metrics\n`);
  }
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    signal?.addEventListener('abort', stop, { once: true });
  });
  await server.close();
  return 0;
}
