/**
 * presync as a library: the two agents and the simulator.
 *
 * ```ts
 * import { migrate, serve } from 'presync';
 * const target = await serve({ listen: '127.0.0.1:0', image: '/tmp/dst.img', secret });
 * const m = migrate({ image: '/dev/shm/app.img', to: target.address, secret, launchAfter: '3s' });
 * for await (const e of m) if (e.event === 'progress') console.log(e.bytesRemaining);
 * const r = await m.result; // r.outcome: 'done' | 'rolled-back' | 'in-doubt'
 * ```
 */
export { migrate, Migration, resultSummary } from './api/migrate.ts';
export type { MigrateOptions, MigrationEvent, ProgressEvent, MigrationSettings, OperatorStatus, ResultSummary, MigrationResult, SourceStatus } from './api/migrate.ts';
export { serve, TargetServer } from './api/serve.ts';
export type { ServeOptions, ServeEvent, HandoverHook, TargetEvent } from './api/serve.ts';
export { simulate } from './api/simulate.ts';
export type { SimulateOptions, SimResult } from './api/simulate.ts';
export type { Duration, Rate, TlsOptions } from './api/options.ts';
export type { Stamped } from './api/event-stream.ts';
export { AgentMetrics } from './api/metrics.ts';
export { PresyncError, ErrorCodes } from './core/errors.ts';
export { policyNames } from './core/policies/registry.ts';
