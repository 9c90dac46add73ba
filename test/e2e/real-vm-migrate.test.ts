/**
 * The real VM migrated with presync (shared disk) in the lab network, through
 * `bench qemu --vm real`'s rig: the memory workload continues on the target,
 * the disk writer finds every record it fsynced on the target's disk, and the
 * client in the third namespace kept its one TCP connection to the guest's
 * echo service through the move (the bridges learned the guest's new port
 * from QEMU's announce).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { netnsUnavailable } from '../../src/lab/netns.ts';
import { runRealVmBench } from '../../src/lab/real-vm-bench.ts';
import { qemuMissing } from './qemu-fixture.ts';

const skip = qemuMissing ?? netnsUnavailable();

describe('real VM: presync migration with a shared disk and a client talking to the guest', { skip, timeout: 420_000 }, () => {
  it('memory continuity, disk records all there, connection survived', async (t) => {
    const progress: string[] = [];
    const res = await runRealVmBench({ workloads: ['text'], reps: 1, memBytes: 1 << 30, presyncForMs: 3000, kinds: ['presync'], onProgress: (l) => progress.push(l) });
    t.diagnostic(progress.join('\n'));
    assert.equal(res.runs.length, 1);
    const r = res.runs[0];
    assert.equal(r.outcome, 'done', JSON.stringify(r.error));
    assert.equal(r.guest?.ok, true, `guest: ${r.guest?.reason}`);
    assert.equal(r.disk?.ok, true, `disk: ${r.disk?.reason}`);
    assert.ok(r.disk!.targetVerified! >= r.disk!.lastSourceWritten, 'the target read back at least what the source had fsynced');
    assert.equal(r.client?.connectionSurvived, true, `client: ${r.client?.error}`);
    assert.ok(r.client!.answered > 100, `answered ${r.client!.answered}`);
    // The client saw the move: a gap that overlaps the pause, at least as long as the part of it after the last answer.
    assert.equal(typeof r.clientGapMs, 'number', 'a client gap across the pause');
    assert.ok(r.clientGapMs! <= r.client!.longestGapMs!, 'the gap across the pause is one of the client\'s gaps');
    assert.equal(r.detail.verified, true, 'presync verified the target image');
    const w = res.workloads[0];
    assert.equal(w.connectionSurvived && w.diskVerified && w.guestOk, true);
  });
});
