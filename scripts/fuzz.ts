/**
 * Long fuzzing run of the wire codec: every property of
 * test/unit/fuzz-properties.ts, 1 000 000 cases in all by default.
 *
 *   npm run fuzz -- [--cases N] [--seed S] [--only SUBSTRING]
 *
 * Exits 1 and prints the shrunk counterexample (with the seed and path that
 * replay it) when a property fails.
 */
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { initDigest } from '../src/native/page-digest.ts';
import { ALL_PROPERTIES } from '../test/unit/fuzz-properties.ts';

const { values } = parseArgs({
  options: { cases: { type: 'string', default: '1000000' }, seed: { type: 'string' }, only: { type: 'string' } },
});
const cases = Number(values.cases);
if (!Number.isInteger(cases) || cases < 1) {
  process.stderr.write(`fuzz: --cases must be a positive integer, got ${values.cases}\n`);
  process.exit(2);
}
const seed = values.seed !== undefined ? Number(values.seed) : Date.now() % 0x7fffffff;
await initDigest();

const selected = ALL_PROPERTIES.filter((p) => values.only === undefined || p.name.includes(values.only));
const shareSum = selected.reduce((a, p) => a + p.share, 0);
process.stdout.write(`fuzz: ${cases} cases over ${selected.length} properties, seed ${seed}\n`);
let failed = 0;
let total = 0;
const t0 = performance.now();
for (const p of selected) {
  const numRuns = Math.max(1, Math.round((cases * p.share) / shareSum));
  const t = performance.now();
  const details = fc.check(p.make(), { numRuns, seed });
  total += details.numRuns;
  const secs = ((performance.now() - t) / 1000).toFixed(1);
  if (details.failed) {
    failed++;
    process.stdout.write(`FAIL ${p.name}: after ${details.numRuns} cases (${secs} s)\n${fc.defaultReportMessage(details) ?? ''}\n`);
  } else {
    process.stdout.write(`ok   ${p.name}: ${details.numRuns} cases (${secs} s)\n`);
  }
}
process.stdout.write(`fuzz: ${total} cases in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${failed} failing properties\n`);
process.exitCode = failed > 0 ? 1 : 0;
