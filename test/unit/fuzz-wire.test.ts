import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import { initDigest } from '../../src/native/page-digest.ts';
import { ALL_PROPERTIES } from './fuzz-properties.ts';

/**
 * The CI share of the wire fuzzing: 60 000 cases over every property, with a
 * fixed seed so a failure reproduces (`npm run fuzz` explores millions more
 * with fresh seeds). fast-check shrinks any counterexample it finds.
 */
const CASES = 60_000;
const SEED = 0x5eed;

describe('wire fuzzing (fast-check)', () => {
  before(async () => {
    await initDigest();
  });
  for (const p of ALL_PROPERTIES) {
    it(`${p.name} (${Math.round(CASES * p.share)} cases)`, () => {
      fc.assert(p.make(), { numRuns: Math.round(CASES * p.share), seed: SEED });
    });
  }
});
