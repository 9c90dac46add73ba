import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPolicy } from '../../src/core/policies/registry.ts';
import type { EpochDecision, EpochObservation, MigrationPolicy } from '../../src/core/types.ts';
import { SourceMigration } from '../../src/engine/source-session.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import { simulate } from '../../src/sim/simulator.ts';
import { MemoryNetwork, MemoryTransport } from '../../src/transport/memory.ts';
import { syntheticWorkload } from '../helpers/synthetic.ts';

const SECRET = Buffer.from('two-shells-secret-0123456789abcdef');

/** Records what the policy saw and decided, without changing it. */
function recording(p: MigrationPolicy): MigrationPolicy & { seen: EpochObservation['phase'][]; decided: EpochDecision[] } {
  const seen: EpochObservation['phase'][] = [];
  const decided: EpochDecision[] = [];
  return {
    name: p.name,
    seen,
    decided,
    decide(obs) {
      seen.push(obs.phase);
      const d = p.decide(obs);
      decided.push(d);
      return d;
    },
  };
}

for (const name of ['presync', 'presync-naive', 'precopy']) {
  test(`the ${name} policy drives both the simulator and the real engine unchanged`, async (t) => {
    const pages = 1024;
    const geometry = { pageSize: 4096, pageCount: pages };

    const simPolicy = recording(createPolicy(name, { geometry, seed: 7 }));
    const workload = syntheticWorkload({ pageCount: pages, hot: 32, periodMs: 20, randomPerSec: 200, seed: 7 });
    const sim = simulate({ workload, policy: simPolicy, link: { bandwidthBytesPerSec: 125e6, rttMs: 1 }, launchAtMs: 2000, epochMs: 50 });
    assert.equal(sim.outcome, 'done');
    assert.equal(sim.verified, true);

    const dir = mkdtempSync(join(tmpdir(), 'presync-2shells-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const src = join(dir, 'src.img');
    writeFileSync(src, Buffer.alloc(pages * 4096, 1));
    const transport = new MemoryTransport({ network: new MemoryNetwork() });
    const agent = await TargetAgent.start({ transport, listen: { host: 'mem', port: 1 }, imagePath: join(dir, 'dst.img'), secret: SECRET });
    const realPolicy = recording(createPolicy(name, { geometry, seed: 7 }));
    const fd = openSync(src, 'r+');
    let paused = false;
    let k = 0;
    const timer = setInterval(() => {
      if (paused) return;
      for (let i = 0; i < 32; i++) writeSync(fd, Buffer.from([k++ & 0xff]), 0, 1, (i % 32) * 4096 + 100);
    }, 5);
    const m = new SourceMigration({
      transport,
      to: agent.address,
      secret: SECRET,
      imagePath: src,
      policy: realPolicy,
      epochMs: 50,
      controller: { kind: 'test', pause: async () => void (paused = true), resume: async () => void (paused = false), commit: async () => {}, release: async () => {}, isAlive: () => true },
    });
    setTimeout(() => m.launch(), 600);
    const real = await m.run();
    clearInterval(timer);
    closeSync(fd);
    await agent.close();
    assert.equal(real.outcome, 'done', JSON.stringify(real.error));
    assert.ok(readFileSync(src).equals(readFileSync(join(dir, 'dst.img'))));

    for (const rec of [simPolicy, realPolicy]) {
      assert.ok(rec.seen.includes('presync') && rec.seen.includes('launched'), 'observed before and after launch');
      assert.equal(rec.decided.filter((d) => d.switchover).length, 1, 'exactly one switchover decision');
    }
    // Same decision vocabulary in both shells (diagnostic keys of the policy's own state).
    const keys = (ds: EpochDecision[]) => new Set(ds.flatMap((d) => Object.keys(d.diag ?? {})));
    assert.deepEqual([...keys(simPolicy.decided)].sort(), [...keys(realPolicy.decided)].sort());
  });
}
