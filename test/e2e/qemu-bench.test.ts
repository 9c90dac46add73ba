/**
 * `presync bench qemu` on a budget CI can afford: one text-workload guest of
 * 128 MiB, one presync and one stock migration over the bench's own link
 * (network namespaces when root, else the shaper), through the bench's
 * function; then its JSON line, results file and report data.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { benchQemu, stockBandwidthFlag } from '../../src/cli/commands/bench-qemu.ts';
import { netnsUnavailable } from '../../src/lab/netns.ts';
import { qemuBenchJson, qemuBenchResults, runQemuBench, summarize, UNCAPPED_BANDWIDTH, type QemuBenchRun } from '../../src/lab/qemu-bench.ts';
import { reportCommand } from '../../src/cli/commands/report.ts';
import { collectRuns, qemuBars } from '../../src/lab/report/data.ts';
import { readResults, writeResults } from '../../src/engine/results-file.ts';
import { qemuMissing } from './qemu-fixture.ts';

const JSON_FIELDS = ['workload', 'presyncLaunchToRunningMsMedian', 'stockLaunchToRunningMsMedian', 'ratio', 'presyncDowntimeMsMedian', 'stockDowntimeMsMedian', 'guestOk', 'stockGuestOk'];

describe('bench qemu: one real presync and one real stock migration', { skip: qemuMissing, timeout: 240_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-qemu-bench-test-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('both kinds migrate the guest, which continues on the target; JSON line, results file and report bars', async (t) => {
    const progress: string[] = [];
    const res = await runQemuBench({ workloads: ['text'], reps: 1, memBytes: 128 << 20, presyncForMs: 3000, link: 'auto', onProgress: (l) => progress.push(l) });
    t.diagnostic(progress.join('\n'));
    assert.equal(res.link.kind, netnsUnavailable() ? 'shaper' : 'netns', res.link.description);
    assert.equal(res.runs.length, 2);
    for (const kind of ['presync', 'stock'] as const) {
      const r = res.runs.find((x) => x.kind === kind);
      assert.ok(r, `a ${kind} run`);
      assert.equal(r.outcome, 'done', `${kind}: ${JSON.stringify(r.error)}`);
      assert.equal(r.guest?.ok, true, `${kind} guest: ${r.guest?.reason}`);
      assert.ok(r.guest!.targetOk! > r.guest!.lastSourceHb, 'the target OK continues past the source');
      for (const k of ['launchToRunningMs', 'downtimeMs', 'qemuDowntimeMs'] as const) assert.equal(typeof r[k], 'number', `${kind}.${k}`);
      assert.ok(r.downtimeMs! > 0 && r.downtimeMs! < r.launchToRunningMs!, `${kind}: 0 < downtime ${r.downtimeMs} < launch→running ${r.launchToRunningMs}`);
      // The guest's RAM crossed the link: at least the workload's 32 MiB buffer.
      assert.ok(r.bytes > 32 << 20, `${kind} moved ${r.bytes} B`);
    }
    const p = res.runs.find((x) => x.kind === 'presync')!;
    assert.ok(p.presyncBytes > 0, 'presync sent pages before launch');
    assert.ok(p.qemuStreamBytes < 4 << 20, `QEMU's own stream carried device state only (${p.qemuStreamBytes} B)`);
    assert.equal(p.detail.verified, true);
    for (const k of ['liveRoundsMs', 'finalScanAndResidualMs', 'verifyMs', 'deviceStateMs', 'targetStartConfirmMs']) assert.equal(typeof p.detail[k], 'number', k);
    const s = res.runs.find((x) => x.kind === 'stock')!;
    assert.equal(s.presyncBytes, 0);
    assert.ok(s.qemuStreamBytes > 32 << 20, 'stock QEMU carried the RAM in its own stream');

    const line = qemuBenchJson(res);
    const back = JSON.parse(JSON.stringify(line)) as { workloads: Array<Record<string, unknown>>; link: string };
    assert.equal(back.workloads.length, 1);
    for (const f of JSON_FIELDS) assert.ok(f in back.workloads[0], `JSON field ${f}`);
    assert.equal(back.workloads[0].guestOk, true);
    assert.equal(typeof back.workloads[0].ratio, 'number');
    assert.equal(back.link, res.link.kind);

    const path = join(dir, 'qemu-bench.json');
    writeResults(path, qemuBenchResults(res, 'test'));
    const file = readResults(path);
    assert.equal(file.kind, 'qemu-bench');
    assert.deepEqual(file.runs.map((r) => r.policy).sort(), ['presync', 'qemu-stock']);
    const bars = qemuBars(collectRuns([{ source: path, results: file }]));
    for (const policy of ['presync', 'qemu-stock']) {
      assert.ok(bars.some((b) => b.policy === policy && b.metric === 'launch → running'), `report bar for ${policy}`);
      assert.ok(bars.some((b) => b.policy === policy && b.metric === 'downtime'), `downtime bar for ${policy}`);
    }
    // The report draws the stock-vs-presync chart from that file.
    const html = join(dir, 'r.html');
    const o: string[] = [];
    assert.equal(await reportCommand([path, '-o', html], { out: (x) => void o.push(x), err: (x) => void o.push(x) }), 0, o.join(''));
    const page = readFileSync(html, 'utf8');
    assert.match(page, /qemu-stock/);
    assert.match(page, /<svg/);
    // And the timeline of each migration: presync's switchover phases as measured, stock QEMU's rounds and pause.
    const timeline = /<figure id="chart-timeline"[\s\S]*?<\/figure>/.exec(page)?.[0] ?? '';
    for (const phase of ['final scan &amp; residual', 'verify', 'device state', 'target start', 'pre-copy rounds', 'stop &amp; copy']) assert.ok(timeline.includes(`phase: ${phase}`), `timeline phase ${phase}`);
  });
});

describe('bench qemu: flags and summaries (no QEMU needed)', () => {
  const io = () => {
    const out: string[] = [];
    return { out, io: { out: (t: string) => void out.push(t), err: () => undefined } };
  };

  it('rejects bad flags with a stable code before starting anything', async () => {
    for (const argv of [['--link', 'wifi'], ['--reps', '0'], ['--workloads', 'games'], ['--memory', '1.5G'], ['--presync-for', '200ms'], ['--stock-bandwidth', 'fast'], ['--accel', 'hvf']]) {
      await assert.rejects(benchQemu(argv, io().io), (e: Error & { code?: string }) => e.code === 'PRESYNC_ERR_BAD_ARGUMENT', argv.join(' '));
    }
  });

  it('--help names the flags', async () => {
    const o = io();
    assert.equal(await benchQemu(['--help'], o.io), 0);
    for (const f of ['--reps', '--json', '--workloads', '--memory', '--presync-for', '--link', '--stock-bandwidth', '--out']) assert.ok(o.out.join('').includes(f), f);
  });

  it('--stock-bandwidth reads QEMU-style sizes as per-second rates', () => {
    assert.equal(stockBandwidthFlag(undefined), UNCAPPED_BANDWIDTH);
    assert.equal(stockBandwidthFlag('uncapped'), UNCAPPED_BANDWIDTH);
    assert.equal(stockBandwidthFlag('32MiB'), 32 * 2 ** 20);
    assert.equal(stockBandwidthFlag('32MiB/s'), 32 * 2 ** 20);
    assert.equal(stockBandwidthFlag('1gbit'), 125_000_000);
  });

  it('guestOk is false as soon as one presync migration failed or lost the guest; a stock failure shows in stockGuestOk', () => {
    const run = (kind: 'presync' | 'stock', rep: number, ok: boolean, l: number): QemuBenchRun => ({
      workload: 'text', kind, rep, outcome: 'done', error: null, launchToRunningMs: l, downtimeMs: 10, qemuDowntimeMs: 10, bytes: 1, presyncBytes: 0, finalBytes: 1, qemuStreamBytes: 1,
      guest: { ok, reason: ok ? '' : 'FAIL', targetOk: 1, targetFirstHb: 1, lastSourceHb: 0 }, detail: {}, series: [],
    });
    const good = [run('presync', 0, true, 100), run('presync', 1, true, 300), run('stock', 0, true, 2000), run('stock', 1, true, 4000)];
    const [w] = summarize(['text'], good);
    assert.equal(w.guestOk, true);
    assert.equal(w.stockGuestOk, true);
    assert.equal(w.presyncLaunchToRunningMsMedian, 200);
    assert.equal(w.stockLaunchToRunningMsMedian, 3000);
    assert.equal(w.ratio, 15);
    const stockLost = summarize(['text'], [...good.slice(0, 3), run('stock', 1, false, 4000)])[0];
    assert.deepEqual([stockLost.guestOk, stockLost.stockGuestOk], [true, false]);
    const noStock = summarize(['text'], good.filter((r) => r.kind === 'presync'))[0];
    assert.deepEqual([noStock.stockGuestOk, noStock.ratio], [false, null], 'no stock run: nothing compared');
    assert.equal(summarize(['text'], [...good, { ...run('presync', 2, true, 100), outcome: 'rolled-back' }])[0].guestOk, false);
    assert.equal(summarize(['text'], [...good, run('presync', 2, false, 100)])[0].guestOk, false);
    assert.equal(summarize(['text'], good.filter((r) => r.kind === 'stock'))[0].guestOk, false, 'no presync run: nothing shown');
  });
});
