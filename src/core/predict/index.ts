import { ErrorCodes, PresyncError } from '../errors.ts';
import { EwmaPredictor, type EwmaConfig } from './ewma.ts';
import { MarkovPredictor, type MarkovConfig } from './markov.ts';
import { ReusePredictor, type ReuseConfig } from './reuse.ts';
import { PREDICTOR_NAMES, type PredictorName, type RewritePredictor } from './types.ts';

export { EwmaPredictor, DEFAULT_EWMA, type EwmaConfig } from './ewma.ts';
export { MarkovPredictor, DEFAULT_MARKOV, type MarkovConfig } from './markov.ts';
export { ReusePredictor, DEFAULT_REUSE, type ReuseConfig } from './reuse.ts';
export { PREDICTOR_NAMES, type PredictorName, type RewritePredictor } from './types.ts';

export interface PredictorOptions {
  readonly markov?: Partial<MarkovConfig>;
  readonly ewma?: Partial<EwmaConfig>;
  readonly reuse?: Partial<ReuseConfig>;
}

export function createPredictor(name: string, pageCount: number, o: PredictorOptions = {}): RewritePredictor {
  switch (name as PredictorName) {
    case 'markov':
      return new MarkovPredictor(pageCount, o.markov);
    case 'ewma':
      return new EwmaPredictor(pageCount, o.ewma);
    case 'reuse':
      return new ReusePredictor(pageCount, o.reuse);
    default:
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `unknown predictor "${name}"; known: ${PREDICTOR_NAMES.join(', ')}`);
  }
}
