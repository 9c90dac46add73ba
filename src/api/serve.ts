/**
 * The target agent as a library: `serve(options)` listens for migrations
 * (one after another into one image, or side by side into a directory) and
 * emits the events `presync serve --json` prints.
 */
import { commandHook } from '../engine/handover-command.ts';
import { TargetAgent } from '../engine/target-agent.ts';
import type { SegmentFile } from '../core/image-layout.ts';
import type { HandoverHook, TargetEvent } from '../engine/target-session.ts';
import { parseAddress } from '../transport/address.ts';
import type { Transport, TransportAddress } from '../transport/types.ts';
import { EventStream } from './event-stream.ts';
import { AgentMetrics, serveMetrics, type MetricsEndpoint } from './metrics.ts';
import { makeTransport, toMs, toSecret, type Duration, type TlsOptions } from './options.ts';

export type { HandoverHook, TargetEvent } from '../engine/target-session.ts';

export interface ServeOptions {
  /** Where to listen, `host:port` (port 0: any free port; see `address`). */
  readonly listen: string | TransportAddress;
  /** One image for every migration; exactly one of image and imageDir. */
  readonly image?: string;
  /** One image of several files for every migration, by id (the source's segments must have these ids); instead of image. */
  readonly segments?: readonly SegmentFile[];
  /** One image per identity, `imageDir/<image id>.img`. */
  readonly imageDir?: string;
  readonly secret: Uint8Array | string;
  /** Run at handover, once the image is verified: a shell command (with $PRESYNC_IMAGE) or a hook. */
  readonly onHandover?: string | HandoverHook;
  /** A command hook's handover is confirmed once it exited 0 or still runs this long after it started (default 1 s). */
  readonly handoverGrace?: Duration;
  /** Overwrite an existing image that belongs to another identity. */
  readonly force?: boolean;
  readonly tls?: TlsOptions;
  /** Serve Prometheus metrics on `host:port`. */
  readonly metrics?: string;
  readonly transport?: Transport;
}

export type ServeEvent = TargetEvent | { event: 'listening'; host: string; port: number } | { event: 'metrics'; host: string; port: number };

/** A running target agent. */
export class TargetServer extends EventStream<ServeEvent> {
  private constructor(
    private readonly agent: TargetAgent,
    private readonly endpoint: MetricsEndpoint | undefined,
  ) {
    super();
  }

  get address(): TransportAddress {
    return this.agent.address;
  }

  /** The metrics endpoint, when `metrics` was given. */
  get metricsAddress(): { host: string; port: number } | undefined {
    return this.endpoint ? { host: this.endpoint.host, port: this.endpoint.port } : undefined;
  }

  /** Stops listening, ends every session, closes the metrics endpoint. */
  async close(): Promise<void> {
    await this.agent.close();
    await this.endpoint?.close();
    this.endEvents();
  }

  /** @internal */
  static async start(o: ServeOptions): Promise<TargetServer> {
    const metrics = o.metrics !== undefined ? new AgentMetrics() : undefined;
    let server: TargetServer | undefined;
    const early: TargetEvent[] = [];
    const onEvent = (e: TargetEvent): void => {
      if (metrics) {
        if (e.event === 'phase') metrics.onPhase(e.phase);
        else if (e.event === 'verify') metrics.onVerify(e.match);
        else if (e.event === 'session-end') metrics.onEnd(e.outcome, null);
      }
      if (server) server.publish(e);
      else early.push(e);
    };
    const graceMs = o.handoverGrace !== undefined ? toMs(o.handoverGrace, 'handoverGrace') : undefined;
    const hook = typeof o.onHandover === 'string' ? commandHook(o.onHandover, graceMs !== undefined ? { graceMs } : {}) : o.onHandover;
    const agent = await TargetAgent.start({
      transport: o.transport ?? makeTransport(o.tls),
      listen: typeof o.listen === 'string' ? parseAddress(o.listen) : o.listen,
      ...(o.image !== undefined ? { imagePath: o.image } : {}),
      ...(o.segments !== undefined ? { segments: o.segments } : {}),
      ...(o.imageDir !== undefined ? { imageDir: o.imageDir } : {}),
      secret: toSecret(o.secret),
      force: o.force === true,
      ...(hook ? { hook } : {}),
      onEvent,
    });
    let endpoint: MetricsEndpoint | undefined;
    try {
      if (metrics && o.metrics !== undefined) endpoint = await serveMetrics(o.metrics, metrics);
    } catch (e) {
      await agent.close();
      throw e;
    }
    server = new TargetServer(agent, endpoint);
    for (const e of early) server.publish(e);
    return server;
  }
}

/** Starts a target agent; resolves once it listens. */
export async function serve(options: ServeOptions): Promise<TargetServer> {
  return await TargetServer.start(options);
}
