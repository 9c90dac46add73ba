import { test } from 'node:test';
import assert from 'node:assert/strict';
import { benchPerf, summaryOf } from '../../src/cli/commands/bench-perf.ts';
import { accountedBytesPerPage, benchCodecs, benchPolicies, benchScan } from '../../src/lab/perf-bench.ts';
import { median } from '../../src/lab/perf-measure.ts';

const io = { out: () => undefined, err: () => undefined };

test('bench perf refuses bad flags with a stable code before measuring anything', async () => {
  await assert.rejects(benchPerf(['--sizes', '7Q'], io), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  await assert.rejects(benchPerf(['--sizes', '0M'], io), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  await assert.rejects(benchPerf(['--streams', '0'], io), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
  await assert.rejects(benchPerf(['--runs', 'x'], io), { code: 'PRESYNC_ERR_BAD_ARGUMENT' });
});

test('the parts measure something real on a small image, and the summary carries the fields the issue asks for', async () => {
  const scan = await benchScan(4 << 20, { dirtyFraction: 0.1, runs: 2 });
  assert.equal(scan.imageBytes, 4 << 20);
  assert.ok(scan.fullScanMs > 0 && Number.isFinite(scan.fullScanMsPerGiB));
  const pol = benchPolicies([1024], 4);
  assert.deepEqual(pol.map((p) => p.policy).sort(), ['precopy', 'presync', 'presync-naive', 'presync-predict', 'presync-slowstart']);
  const codecs = await benchCodecs(1 << 20);
  const none = codecs.find((c) => c.codec === 'none');
  assert.ok(none && none.ratio === 1, 'raw pages are sent as they are');
  assert.ok(codecs.find((c) => c.codec === 'deflate')!.ratio < 1, 'text-like pages compress');
  const acc = accountedBytesPerPage();
  const s = summaryOf(
    {
      scans: [{ ...scan, imageBytes: 256 << 20, fullScanMs: 40, fullScanMsPerGiB: 160 }],
      policies: pol,
      codecs,
      sync: [{ imageBytes: 1 << 30, streams: 1, syncMs: 1000, syncBytesPerSec: 2e9, verified: true, sourceAnonPeakDeltaBytes: 1 << 20 }],
      memory: { accountedSourceBytesPerPage: acc.source, accountedTargetBytesPerPage: acc.target, accountedFraction: acc.source / 4096, measuredFraction: 1 / 1024, imageBytes: 1 << 30 },
      native: true,
    },
    null,
  );
  assert.equal(s.scan256MiBMs, 40);
  assert.deepEqual(s.scanMsPerGiB, { '256MiB': 160 });
  assert.equal(s.memoryOverheadFraction, acc.source / 4096);
  assert.ok('throughputRatioVsQemu' in s);
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
});
