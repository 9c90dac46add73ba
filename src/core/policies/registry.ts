import { ErrorCodes, PresyncError } from '../errors.ts';
import type { MigrationPolicy, PolicyContext } from '../types.ts';
import { NaivePresyncPolicy } from './naive.ts';
import { OraclePolicy } from './oracle.ts';
import { createPresyncPredict } from './predict.ts';
import { createPresync, createPresyncFresh } from './presync.ts';
import { createPresyncSlowstart } from './slowstart.ts';
import type { PolicyOptions } from './options.ts';
import { PrecopyPolicy } from './precopy.ts';

export type PolicyFactory = (ctx: PolicyContext, opts: PolicyOptions) => MigrationPolicy;

/**
 * Every policy by name. A new policy is one module and one line here; the
 * simulator, the engine and the CLI all resolve names through this table.
 */
const FACTORIES = new Map<string, PolicyFactory>([
  ['precopy', (ctx, o) => new PrecopyPolicy(ctx, o)],
  ['presync-naive', (ctx, o) => new NaivePresyncPolicy(ctx, o)],
  ['presync-predict', (ctx, o) => createPresyncPredict(ctx, o)],
  ['presync-slowstart', (ctx, o) => createPresyncSlowstart(ctx, o)],
  ['presync', (ctx, o) => createPresync(ctx, o)],
  ['presync-fresh', (ctx, o) => createPresyncFresh(ctx, o)],
  ['oracle', (ctx, o) => new OraclePolicy(ctx, o)],
]);

export function policyNames(): string[] {
  return [...FACTORIES.keys()];
}

export function registerPolicy(name: string, factory: PolicyFactory): void {
  FACTORIES.set(name, factory);
}

/** Does this policy need future knowledge (the oracle)? */
export function needsFuture(name: string): boolean {
  return name === 'oracle';
}

export function createPolicy(name: string, ctx: PolicyContext, opts: PolicyOptions = {}): MigrationPolicy {
  const f = FACTORIES.get(name);
  if (!f) {
    throw new PresyncError(ErrorCodes.BAD_POLICY, `unknown policy "${name}"; known policies: ${policyNames().join(', ')}`);
  }
  return f(ctx, opts);
}
