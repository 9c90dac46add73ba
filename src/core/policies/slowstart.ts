import type { PolicyContext } from '../types.ts';
import type { PolicyOptions } from './options.ts';
import { PresyncPolicy, type PresyncTuning } from './presync.ts';

/** presync-slowstart: naive's choice (every stale page, lowest index first) paced by the slow-start window. */
export function createPresyncSlowstart(ctx: PolicyContext, opts: PolicyOptions = {}, tuning: PresyncTuning = {}): PresyncPolicy {
  return new PresyncPolicy(ctx, opts, { name: 'presync-slowstart', predict: false, slowStart: true }, tuning);
}
