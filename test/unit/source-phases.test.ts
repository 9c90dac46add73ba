/**
 * Each phase of a source migration on its own (src/engine/source-phases.ts),
 * against a real target agent over the in-memory transport: what the phase
 * sends, what it leaves in the state, what the target's image holds after it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSync, readFileSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { PresyncError, ErrorCodes } from '../../src/core/errors.ts';
import { NetEstimator } from '../../src/core/net-estimator.ts';
import { PhaseMachine, type Phase } from '../../src/core/phase.ts';
import type { EpochDecision, MigrationPolicy } from '../../src/core/types.ts';
import type { GuestController } from '../../src/guest/controller.ts';
import { RamImageReader } from '../../src/guest/ram-image.ts';
import { initDigest } from '../../src/native/page-digest.ts';
import { PageSender } from '../../src/engine/page-sender.ts';
import { SourceLink } from '../../src/engine/source-link.ts';
import type { SourceEvent } from '../../src/engine/source-options.ts';
import {
  commitDeviceState,
  connectAndScan,
  enterLaunched,
  finalCopy,
  handover,
  liveRound,
  pauseGuest,
  presyncEpoch,
  rollback,
  verify,
  type SourceRun,
} from '../../src/engine/source-phases.ts';
import { SourceState } from '../../src/engine/source-state.ts';
import { TargetAgent } from '../../src/engine/target-agent.ts';
import type { TargetEvent } from '../../src/engine/target-session.ts';
import { MemoryNetwork, MemoryTransport } from '../../src/transport/memory.ts';
import { scratchDir } from '../helpers/scratch.ts';

const SECRET = Buffer.from('source-phases-secret-0123456789ab');
const PAGE = 4096;
const PAGES = 512;

/** Sends every stale page at once; after launch, one live round, then the switchover. */
function sendAll(): MigrationPolicy {
  let rounds = 0;
  return {
    name: 'send-all',
    decide(obs): EpochDecision {
      const send = obs.stale.toArray();
      if (obs.phase === 'launched' && rounds++ > 0) return { send: new Uint32Array(0), budgetBytes: Infinity, switchover: true };
      return { send, budgetBytes: Infinity, switchover: false };
    },
  };
}

interface Guest extends GuestController {
  readonly calls: string[];
}

function guest(): Guest {
  const calls: string[] = [];
  return {
    kind: 'test',
    calls,
    pause: async () => void calls.push('pause'),
    resume: async () => void calls.push('resume'),
    commit: async () => void calls.push('commit'),
    release: async () => void calls.push('release'),
    isAlive: () => true,
  };
}

interface Rig {
  readonly r: SourceRun;
  readonly src: string;
  readonly dst: string;
  readonly controller: Guest;
  readonly events: SourceEvent[];
  readonly targetEnds: Array<Extract<TargetEvent, { event: 'session-end' }>>;
  /** Writes `value` into page `page` of the source image, as the running guest would. */
  write(page: number, value: number): void;
  launch(): void;
  close(): Promise<void>;
}

/** A source run wired as SourceMigration wires it, to a target agent over the in-memory transport. */
async function rig(policy: MigrationPolicy = sendAll()): Promise<Rig> {
  await initDigest();
  const dir = scratchDir('presync-phases-');
  const src = join(dir, 'src.img');
  const dst = join(dir, 'dst.img');
  const image = Buffer.alloc(PAGES * PAGE);
  for (let p = 0; p < PAGES; p += 2) image.writeUInt32LE(p + 1, p * PAGE);
  writeFileSync(src, image);
  const transport = new MemoryTransport({ network: new MemoryNetwork() });
  const targetEnds: Rig['targetEnds'] = [];
  const agent = await TargetAgent.start({
    transport,
    listen: { host: 'mem', port: 1 },
    imagePath: dst,
    secret: SECRET,
    onEvent: (e) => void (e.event === 'session-end' && targetEnds.push(e)),
  });
  const reader = RamImageReader.open(src, PAGE);
  const s = new SourceState(reader, new NetEstimator({ initialBandwidthBytesPerSec: 125e6, windowSamples: 10, minSampleMs: 5, capBytesPerSec: Infinity }));
  const start = performance.now();
  const now = (): number => performance.now() - start;
  const events: SourceEvent[] = [];
  const phases = new PhaseMachine();
  let launchedAt = -1;
  const link = new SourceLink(
    { transport, to: agent.address, secret: SECRET, imageId: 'phases-test', lineageId: '0123456789abcdef0123456789abcdef', streams: 1, reconnectAttempts: 2, stepTimeoutMs: 10_000, now, onConnected: (e) => void events.push({ event: 'connected', ...e }) },
    s,
  );
  const controller = guest();
  const r: SourceRun = {
    o: { transport, to: agent.address, secret: SECRET, imagePath: src, policy, controller },
    s,
    link,
    sender: new PageSender(s, link, { codec: 'none', pagesPerFrame: 64 }),
    epochMs: 20,
    stepTimeoutMs: 10_000,
    scanMode: 'full',
    overlapScans: false,
    now,
    emit: (e) => void events.push(e),
    toPhase: (p: Phase, reason?: string) => phases.to(p, now(), reason),
    phase: () => phases.phase,
    launchedAt: () => launchedAt,
    stopRequested: () => false,
    downtimeLimitMs: () => undefined,
    untilLaunchOr: async () => undefined,
    updateStatus: () => undefined,
    progress: () => undefined,
  };
  const fd = openSync(src, 'r+');
  return {
    r,
    src,
    dst,
    controller,
    events,
    targetEnds,
    write: (page, value) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(value);
      writeSync(fd, b, 0, 4, page * PAGE + 100);
    },
    launch: () => void (launchedAt = now()),
    close: async () => {
      r.link.destroyLanes();
      closeSync(fd);
      reader.close();
      await agent.close();
    },
  };
}

const same = (a: string, b: string): boolean => readFileSync(a).equals(readFileSync(b));

test('connectAndScan: connected, presync entered, every non-zero page stale', async () => {
  const g = await rig();
  try {
    await connectAndScan(g.r);
    assert.equal(g.r.phase(), 'presync');
    assert.equal(g.events[0]?.event, 'connected');
    assert.equal(g.r.s.stale.count(), PAGES / 2, 'the zero pages are what a fresh target holds already');
    assert.equal(g.r.s.initialLeft, PAGES / 2);
  } finally {
    await g.close();
  }
});

test('presyncEpoch: the policy sends, the target acknowledges, the initial copy is done', async () => {
  const g = await rig();
  try {
    await connectAndScan(g.r);
    await presyncEpoch(g.r, { lastEpochStart: -1, nextScan: undefined });
    assert.equal(g.r.s.epoch, 1);
    assert.equal(g.r.s.stale.count(), 0);
    assert.equal(g.r.s.initialLeft, 0);
    await g.r.link.drain();
    assert.ok(g.r.s.acct.presyncBytes > (PAGES / 2) * PAGE, 'every non-zero page went out, framing included');
    assert.equal(g.r.s.acct.series.length, 1);
  } finally {
    await g.close();
  }
});

test('liveRound: pages written after launch go out in a round; the policy then asks for the switchover', async () => {
  const g = await rig();
  try {
    await connectAndScan(g.r);
    await presyncEpoch(g.r, { lastEpochStart: -1, nextScan: undefined });
    g.launch();
    const loop = await enterLaunched(g.r);
    assert.equal(g.r.phase(), 'launched');
    g.write(7, 0xdead);
    g.write(300, 0xbeef);
    assert.equal(await liveRound(g.r, loop), true, 'a round was sent');
    assert.equal(g.r.s.residualPagesAtLaunch, 2);
    assert.equal(g.r.link.inflightCount, 0, 'the round waits for its acknowledgements');
    assert.equal(await liveRound(g.r, loop), false, 'switchover');
  } finally {
    await g.close();
  }
});

test('pauseGuest and finalCopy: one pause, then the target holds the source image bit for bit', async () => {
  const g = await rig();
  try {
    await connectAndScan(g.r);
    await presyncEpoch(g.r, { lastEpochStart: -1, nextScan: undefined });
    g.launch();
    await enterLaunched(g.r);
    g.write(11, 42);
    await pauseGuest(g.r);
    assert.deepEqual(g.controller.calls, ['pause']);
    assert.equal(g.r.phase(), 'final-copy');
    assert.ok(g.r.s.pausedAt >= 0);
    await finalCopy(g.r);
    assert.equal(g.r.s.stale.count(), 0);
    assert.ok(same(g.src, g.dst));
  } finally {
    await g.close();
  }
});

test('verify: a page the target holds differently is found, sent again once, and verified', async () => {
  const g = await rig();
  try {
    await connectAndScan(g.r);
    await presyncEpoch(g.r, { lastEpochStart: -1, nextScan: undefined });
    g.launch();
    await enterLaunched(g.r);
    await pauseGuest(g.r);
    await finalCopy(g.r);
    const resentBefore = g.r.s.acct.resentPages;
    // The target's file loses a page behind its back (the target reads its bytes back to verify).
    const fd = openSync(g.dst, 'r+');
    writeSync(fd, Buffer.from([0xff]), 0, 1, 4 * PAGE + 9);
    closeSync(fd);
    await verify(g.r);
    assert.equal(g.r.phase(), 'verify');
    assert.equal(g.r.s.acct.resentPages, resentBefore + 1);
    assert.ok(same(g.src, g.dst));
  } finally {
    await g.close();
  }
});

test('commitDeviceState and handover: commit before HANDOVER, release after its confirmation', async () => {
  const g = await rig();
  try {
    await connectAndScan(g.r);
    await presyncEpoch(g.r, { lastEpochStart: -1, nextScan: undefined });
    g.launch();
    await enterLaunched(g.r);
    await pauseGuest(g.r);
    await finalCopy(g.r);
    await verify(g.r);
    await commitDeviceState(g.r);
    assert.deepEqual(g.controller.calls, ['pause', 'commit']);
    const resumedAt = await handover(g.r);
    assert.ok(resumedAt >= g.r.s.pausedAt);
    assert.equal(g.r.phase(), 'done');
    assert.deepEqual(g.controller.calls, ['pause', 'commit', 'release']);
    assert.ok(same(g.src, g.dst));
  } finally {
    await g.close();
  }
});

test('rollback while paused: the guest resumes, the target hears ABORT, the result says rolled-back', async () => {
  const g = await rig();
  try {
    await connectAndScan(g.r);
    await presyncEpoch(g.r, { lastEpochStart: -1, nextScan: undefined });
    g.launch();
    await enterLaunched(g.r);
    await pauseGuest(g.r);
    const res = await rollback(g.r, new PresyncError(ErrorCodes.VERIFY, 'test'));
    assert.equal(res.outcome, 'rolled-back');
    assert.equal(res.error?.code, ErrorCodes.VERIFY);
    assert.equal(g.r.phase(), 'rollback');
    assert.deepEqual(g.controller.calls, ['pause', 'resume']);
    for (let i = 0; i < 200 && g.targetEnds.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(g.targetEnds[0]?.outcome, 'aborted');
  } finally {
    await g.close();
  }
});

test('rollback after HANDOVER went out unconfirmed: in doubt, and the guest stays paused', async () => {
  const g = await rig();
  try {
    await connectAndScan(g.r);
    g.launch();
    await enterLaunched(g.r);
    await pauseGuest(g.r);
    g.r.s.handoverSent = true;
    const res = await rollback(g.r, new PresyncError(ErrorCodes.CONNECTION, 'lost'));
    assert.equal(res.outcome, 'in-doubt');
    assert.equal(res.error?.code, ErrorCodes.HANDOVER_IN_DOUBT);
    assert.deepEqual(g.controller.calls, ['pause'], 'no resume: the guest may run on the target');
  } finally {
    await g.close();
  }
});
