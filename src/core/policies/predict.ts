import type { PolicyContext } from '../types.ts';
import type { PolicyOptions } from './options.ts';
import { PresyncPolicy, type PresyncTuning } from './presync.ts';

/** presync-predict: memory change prediction alone; what is not held back goes at the full link rate, as in presync-naive. */
export function createPresyncPredict(ctx: PolicyContext, opts: PolicyOptions = {}, tuning: PresyncTuning = {}): PresyncPolicy {
  return new PresyncPolicy(ctx, opts, { name: 'presync-predict', predict: true, slowStart: false }, tuning);
}
