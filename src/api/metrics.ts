/**
 * Prometheus metrics of an agent (`--metrics HOST:PORT`), named after what
 * KubeVirt and QEMU operators already watch: data processed and remaining,
 * dirty rate, transfer rate, expected downtime, phase, and counters of
 * outcomes, verify failures and reconnects. Served as text on GET /metrics.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { PHASES } from '../core/phase.ts';
import { parseAddress } from '../transport/address.ts';
import type { MigrationProgress } from '../engine/progress-tracker.ts';

/** Metrics of one agent process; a source and a target fill different ones. */
export class AgentMetrics {
  readonly registry = new Registry();
  private readonly processed: Gauge;
  private readonly remaining: Gauge;
  private readonly dirtyRate: Gauge;
  private readonly transferRate: Gauge;
  private readonly expectedDowntime: Gauge;
  private readonly phase: Gauge<'phase'>;
  private readonly migrations: Counter<'outcome'>;
  private readonly pause: Histogram;
  private readonly verifyFailures: Counter;
  private readonly reconnects: Counter;
  private readonly phases = new Set<string>(PHASES);

  constructor() {
    const registers = [this.registry];
    this.processed = new Gauge({ name: 'presync_data_processed_bytes', help: 'Bytes of pages sent to the target so far in the current migration', registers });
    this.remaining = new Gauge({ name: 'presync_data_remaining_bytes', help: 'Bytes of pages the target does not hold yet (stale pages × page size)', registers });
    this.dirtyRate = new Gauge({ name: 'presync_dirty_memory_rate_bytes', help: 'Rate at which the guest dirties memory, bytes per second (smoothed)', registers });
    this.transferRate = new Gauge({ name: 'presync_transfer_rate_bytes_per_second', help: 'Send rate to the target, bytes per second (smoothed)', registers });
    this.expectedDowntime = new Gauge({ name: 'presync_expected_downtime_seconds', help: 'Pause to expect if the migration were launched now', registers });
    this.phase = new Gauge({ name: 'presync_phase', help: 'The current phase (1 for the phase the migration is in, 0 for the others)', labelNames: ['phase'], registers });
    this.migrations = new Counter({ name: 'presync_migrations_total', help: 'Migrations ended, by outcome (done, rolled-back, in-doubt on a source; handed-over, aborted, failed on a target)', labelNames: ['outcome'], registers });
    this.pause = new Histogram({ name: 'presync_pause_duration_seconds', help: 'How long the guest was paused at the switchover', buckets: [0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5], registers });
    this.verifyFailures = new Counter({ name: 'presync_verify_failures_total', help: "Verifications that found the target's pages differing from the source's", registers });
    this.reconnects = new Counter({ name: 'presync_reconnects_total', help: 'Connections to the target lost and made again during presync', registers });
    for (const p of PHASES) this.phase.set({ phase: p }, p === 'idle' ? 1 : 0);
  }

  onProgress(p: MigrationProgress): void {
    this.processed.set(p.bytesSent);
    this.remaining.set(p.bytesRemaining);
    this.dirtyRate.set(p.dirtyRateBytesPerSec);
    this.transferRate.set(p.rateBytesPerSec);
    this.expectedDowntime.set(p.expectedDowntimeMs / 1000);
  }

  onPhase(phase: string): void {
    // A target names its own phases: each one seen gets its series.
    this.phases.add(phase);
    for (const p of this.phases) this.phase.set({ phase: p }, p === phase ? 1 : 0);
  }

  onReconnect(): void {
    this.reconnects.inc();
  }

  onVerify(match: boolean): void {
    if (!match) this.verifyFailures.inc();
  }

  onEnd(outcome: string, downtimeMs: number | null): void {
    this.migrations.inc({ outcome });
    if (downtimeMs !== null) this.pause.observe(downtimeMs / 1000);
  }

  async text(): Promise<string> {
    return await this.registry.metrics();
  }
}

export interface MetricsEndpoint {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Serves `metrics` on http://HOST:PORT/metrics (PORT 0: any free port). */
export async function serveMetrics(address: string, metrics: AgentMetrics): Promise<MetricsEndpoint> {
  const a = parseAddress(address);
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url !== '/metrics' && req.url !== '/')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('see /metrics\n');
      return;
    }
    metrics.text().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(e)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new PresyncError(ErrorCodes.BAD_ARGUMENT, `--metrics ${address}: cannot listen: ${e.message}`)));
    server.listen(a.port, a.host, () => resolve());
  });
  server.unref();
  const bound = server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : a.port;
  return {
    host: a.host,
    port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
