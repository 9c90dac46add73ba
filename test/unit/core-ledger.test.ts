import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_WIRE_COST, fullPageWireBytes } from '../../src/core/cost.ts';
import { estimateDowntime } from '../../src/core/downtime.ts';
import { ShellLedger, type LedgerFields } from '../../src/core/ledger.ts';
import type { EpochDecision, EpochObservation, MigrationPolicy } from '../../src/core/types.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { simulate } from '../../src/sim/simulator.ts';
import { MemoryNetwork, MemoryTransport } from '../../src/transport/memory.ts';
import { syntheticWorkload } from '../helpers/synthetic.ts';

const SECRET = Buffer.from('two-shells-secret-0123456789abcdef');

test('the ledger averages recent sends, each weighing twice the one before', () => {
  const l = new ShellLedger(4096);
  assert.equal(l.wireBytesPerPage, fullPageWireBytes(4096), 'a full page before anything is sent');
  l.onSend(100 * 4113, 100, 100);
  assert.equal(l.wireBytesPerPage, 4113);
  l.onSend(10 * 17, 10, 12);
  // (100·4113·0.5 + 170) ÷ (100·0.5 + 10)
  assert.equal(l.wireBytesPerPage, (100 * 4113 * 0.5 + 170) / 60);
  l.onSend(0, 0, 0);
  l.onSend(0, 0, 0);
  l.onSend(0, 0, 0);
  l.onSend(0, 0, 0);
  l.onSend(0, 0, 0);
  l.onSend(0, 0, 0);
  l.onSend(0, 0, 0);
  assert.equal(l.wireBytesPerPage, fullPageWireBytes(4096), 'old sends stop counting');
});

test('the ledger counts offered and delivered bytes per observation', () => {
  const l = new ShellLedger(4096);
  l.onSend(1000, 1, 3);
  l.onSend(500, 1, 1);
  l.onDelivered(700);
  const a = l.observe();
  assert.deepEqual({ offered: a.offeredBytes, delivered: a.deliveredBytes, consumed: a.consumed }, { offered: 1500, delivered: 700, consumed: 1 });
  l.onDelivered(800);
  const b = l.observe();
  assert.deepEqual({ offered: b.offeredBytes, delivered: b.deliveredBytes, consumed: b.consumed }, { offered: 0, delivered: 800, consumed: 1 });
});

test('the ledger expects the downtime core/downtime.ts computes', () => {
  const l = new ShellLedger(4096);
  l.onSend(64 * 4113 + 28, 64, 64);
  const want = estimateDowntime(1000, l.wireBytesPerPage, 125e6, 2).expectedDowntimeMs;
  assert.equal(l.expectedDowntimeMs(1000, 125e6, 2), want);
});

test('the wire cost model matches the real PAGES framing', async () => {
  const { initDigest } = await import('../../src/native/page-digest.ts');
  const { encodeRawPagesFrame } = await import('../../src/wire/pages-frame.ts');
  await initDigest();
  for (const n of [1, 37, 64]) {
    const frame = encodeRawPagesFrame(1, Array.from({ length: n }, (_, i) => i), Buffer.alloc(n * 4096, 1), 4096).frame;
    assert.equal(frame.length, DEFAULT_WIRE_COST.frameHeaderBytes + n * (DEFAULT_WIRE_COST.pageHeaderBytes + 4096), `${n} pages`);
  }
});

/** Pages each presync epoch sends, in order: full pages, a short one, none, then zero pages among full ones. */
const SCRIPT: readonly (readonly [number, number])[] = [
  [0, 100],
  [100, 164],
  [164, 165],
  [165, 165],
  [165, 295],
  [550, 700],
];
const PAGES = 1024;
const NON_ZERO = 600;

type Seen = Pick<EpochObservation, 'epoch' | 'consumed' | 'wireBytesPerPage'> & { offeredBytes: number };

/** Sends SCRIPT's pages one epoch at a time, then asks for launch and pauses at once. */
function scripted(onScriptDone: () => void): MigrationPolicy & { seen: Seen[] } {
  const seen: Seen[] = [];
  let step = 0;
  return {
    name: 'scripted',
    seen,
    decide(obs): EpochDecision {
      if (obs.phase === 'launched') return { send: new Uint32Array(0), budgetBytes: Infinity, switchover: true };
      seen.push({ epoch: obs.epoch, consumed: obs.consumed, wireBytesPerPage: obs.wireBytesPerPage, offeredBytes: obs.net.offeredBytes });
      const range = SCRIPT[step++];
      if (!range) {
        onScriptDone();
        return { send: new Uint32Array(0), budgetBytes: 0, switchover: false };
      }
      const send = new Uint32Array(range[1] - range[0]).map((_, i) => range[0] + i);
      return { send, budgetBytes: Infinity, switchover: false };
    },
  };
}

test('both shells report the same ledger fields for the same sends', async () => {
  const epochMs = 50;
  const simPolicy = scripted(() => undefined);
  const workload = syntheticWorkload({ pageCount: PAGES, hot: 0, periodMs: 1, randomPerSec: 0, seed: 1, nonZero: NON_ZERO });
  const sim = simulate({ workload, policy: simPolicy, link: { bandwidthBytesPerSec: 125e6, rttMs: 1 }, launchAtMs: (SCRIPT.length + 1) * epochMs, epochMs });
  assert.equal(sim.outcome, 'done');

  const dir = mkdtempSync(join(tmpdir(), 'presync-ledger-'));
  try {
    const src = join(dir, 'src.img');
    const image = Buffer.alloc(PAGES * 4096);
    image.fill(1, 0, NON_ZERO * 4096);
    writeFileSync(src, image);
    const transport = new MemoryTransport({ network: new MemoryNetwork() });
    const agent = await TargetAgent.start({ transport, listen: { host: 'mem', port: 1 }, imagePath: join(dir, 'dst.img'), secret: SECRET });
    try {
      let m: SourceMigration | undefined;
      const realPolicy = scripted(() => m?.launch());
      m = new SourceMigration({
        transport,
        to: agent.address,
        secret: SECRET,
        imagePath: src,
        policy: realPolicy,
        epochMs,
        controller: { kind: 'test', pause: async () => undefined, resume: async () => undefined, commit: async () => undefined, release: async () => undefined, isAlive: () => true },
      });
      const real = await m.run();
      assert.equal(real.outcome, 'done', JSON.stringify(real.error));
      const fields = (s: readonly Seen[]): Omit<LedgerFields, 'deliveredBytes'>[] =>
        s.slice(0, SCRIPT.length + 1).map((o) => ({ consumed: o.consumed, wireBytesPerPage: o.wireBytesPerPage, offeredBytes: o.offeredBytes }));
      assert.equal(realPolicy.seen.length >= SCRIPT.length + 1, true);
      assert.deepEqual(fields(realPolicy.seen), fields(simPolicy.seen));
    } finally {
      await agent.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
