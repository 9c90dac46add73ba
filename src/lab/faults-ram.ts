/**
 * Fault cases for RAM-file guests: a writer process (its state lives in its
 * image) migrated by a real source agent to a real target agent over TCP on
 * loopback, with the fault proxy, SIGKILL, a full disk or a second migration
 * as the fault.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPolicy } from '../core/policies/registry.ts';
import type { GuestController } from '../guest/controller.ts';
import { ProcessController, processState } from '../guest/controller.ts';
import { readLock, lockPath } from '../engine/source-lock.ts';
import { SourceMigration, type MigrationResult, type SourceEvent } from '../engine/source-session.ts';
import { TargetAgent } from '../engine/target-agent.ts';
import type { HandoverHook, TargetEvent } from '../engine/target-session.ts';
import { commandHook } from '../engine/handover-command.ts';
import { FaultProxy } from '../transport/fault-proxy.ts';
import { ShapedTransport } from '../transport/shaper.ts';
import { TcpTransport } from '../transport/tcp.ts';
import type { Transport, TransportAddress } from '../transport/types.ts';
import type { FaultCase } from './fault-case.ts';
import { CLI_HANG_GUARD_MS, runCli, spawnCli, type CliChild } from './faults-cli.ts';
import {
  checkWriterImage,
  judgeDone,
  judgeRolledBack,
  PAGE,
  startWriter,
  targetRestart,
  waitFor,
  type TargetRestart,
  type Verdict,
  type Writer,
} from './faults-rig.ts';
import { sleep } from '../transport/deadline.ts';

const SECRET = Buffer.from('presync-fault-matrix-secret-0123');
const PAGES = 2048;

interface Rig {
  readonly dir: string;
  readonly writer: Writer;
  readonly restart: TargetRestart;
  readonly agent: TargetAgent;
  readonly targetImage: string;
  readonly proxy: FaultProxy | undefined;
  readonly targetEnds: Array<Extract<TargetEvent, { event: 'session-end' }>>;
  /** The target image as it was when a session failed on a bad frame (before anything else could touch it). */
  readonly atFailure: Buffer[];
  /** Pages the target found damaged in its own file (re-verification), by when. */
  readonly repairs: { presync: number; verify: number };
  readonly to: TransportAddress;
  close(): Promise<void>;
}

interface RigOptions {
  readonly proxy?: boolean;
  readonly targetImage?: string;
  readonly pages?: number;
  /** The target's handover hook; default: restart the writer on the target. */
  readonly hook?: HandoverHook;
}

async function rig(dir: string, o: RigOptions = {}): Promise<Rig> {
  const writer = await startWriter(dir, 'guest', o.pages ?? PAGES);
  const restart = targetRestart(dir);
  const targetImage = o.targetImage ?? join(dir, 'target.img');
  const targetEnds: Rig['targetEnds'] = [];
  const atFailure: Buffer[] = [];
  const repairs = { presync: 0, verify: 0 };
  let agent: TargetAgent | undefined;
  let proxy: FaultProxy | undefined;
  try {
    agent = await TargetAgent.start({
      transport: new TcpTransport(),
      listen: { host: '127.0.0.1', port: 0 },
      imagePath: targetImage,
      secret: SECRET,
      hook: o.hook ?? restart.hook,
      onEvent: (e) => {
        if (e.event === 'repair') repairs[e.during] += e.pages;
        if (e.event === 'session-end') {
          targetEnds.push(e);
          if (e.error && e.error.code !== 'PRESYNC_ERR_CONNECTION' && existsSync(targetImage)) atFailure.push(readFileSync(targetImage));
        }
      },
    });
    proxy = o.proxy ? await FaultProxy.start({ upstream: agent.address }) : undefined;
  } catch (e) {
    writer.kill();
    await agent?.close();
    throw e;
  }
  const a = agent;
  return {
    dir,
    writer,
    restart,
    agent: a,
    targetImage,
    proxy,
    targetEnds,
    atFailure,
    repairs,
    to: proxy?.address ?? a.address,
    close: async () => {
      writer.kill();
      await proxy?.close();
      await a.close();
    },
  };
}

interface MigrateSpec {
  readonly launchAfterMs?: number;
  readonly rate?: number;
  readonly onEvent?: (e: SourceEvent, m: SourceMigration) => void;
  readonly controller?: (inner: GuestController) => GuestController;
  readonly transport?: Transport;
  readonly to?: TransportAddress;
}

async function migrate(r: Rig, s: MigrateSpec = {}): Promise<MigrationResult> {
  const inner = new ProcessController(r.writer.pid);
  const base: Transport = s.transport ?? new TcpTransport();
  const m: SourceMigration = new SourceMigration({
    transport: s.rate ? new ShapedTransport(base, { rate: s.rate }) : base,
    to: s.to ?? r.to,
    secret: SECRET,
    imagePath: r.writer.image,
    policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: PAGES }, seed: 1 }),
    controller: s.controller ? s.controller(inner) : inner,
    epochMs: 50,
    stepTimeoutMs: 10_000,
    ...(s.rate ? { bandwidthBytesPerSec: s.rate } : {}),
    onEvent: (e) => s.onEvent?.(e, m),
  });
  const timer = s.launchAfterMs !== undefined ? setTimeout(() => m.launch(), s.launchAfterMs) : undefined;
  // A fault that never fires must not hang the matrix: launch anyway after a while.
  const fallback = setTimeout(() => m.launch(), 15_000);
  try {
    return await m.run();
  } finally {
    clearTimeout(timer);
    clearTimeout(fallback);
  }
}

function errText(e: { code: string; message: string } | null | undefined): string {
  if (!e) return 'no error';
  // An internal error is a bug somewhere: say what it was.
  return e.code === 'PRESYNC_ERR_INTERNAL' ? `${e.code}: ${e.message.slice(0, 160)}` : e.code;
}

function targetState(r: Rig): string {
  try {
    return (JSON.parse(readFileSync(`${r.targetImage}.presync`, 'utf8')) as { state: string }).state;
  } catch {
    return 'absent';
  }
}

/** After a rollback: how the target session ended, and that its image is not left startable. */
async function targetSide(r: Rig): Promise<{ text: string; ok: boolean }> {
  await waitFor('the target session to end', () => r.targetEnds.length > 0, 10_000).catch(() => undefined);
  const st = targetState(r);
  return { text: `target session ${errText(r.targetEnds.at(-1)?.error)}, its image ${st}`, ok: st !== 'valid' && r.targetEnds.length > 0 };
}

async function judge(r: Rig, res: { outcome: string }, expect: 'done' | 'rolled-back'): Promise<Verdict> {
  if (res.outcome === 'done') return judgeDone(r.writer, r.restart, r.targetImage);
  const v = await judgeRolledBack(r.writer, r.restart);
  if (expect === 'done') v.notes.push('expected done');
  return v;
}

function finish(res: { outcome: string; error?: { code: string; message: string } | null }, v: Verdict, evidence: string, checks = true) {
  const outcome = res.outcome === 'done' || res.outcome === 'rolled-back' || res.outcome === 'in-doubt' ? res.outcome : 'failed';
  const detail = [evidence, ...v.notes].filter(Boolean).join('; ');
  return { outcome, guestRunning: v.guestRunning, memoryVerified: v.memoryVerified, lostPages: v.lostPages, detail, checks } as const;
}

/** A controller whose pause/commit run `hook` first: the fault lands at an exact step of the switchover. */
function around(inner: GuestController, at: 'pause' | 'commit', hook: () => Promise<void>): GuestController {
  return {
    kind: inner.kind,
    pause: async () => {
      await inner.pause();
      if (at === 'pause') await hook();
    },
    resume: () => inner.resume(),
    commit: async () => {
      if (at === 'commit') await hook();
      await inner.commit();
    },
    release: () => inner.release(),
    isAlive: () => inner.isAlive(),
  };
}

type CaseOutcome = Awaited<ReturnType<FaultCase['run']>>;

/** A fault case run on a fresh rig, which is taken down afterwards whatever happens. */
function onRig(name: string, inject: string, opts: RigOptions, body: (r: Rig, dir: string) => Promise<CaseOutcome>): FaultCase {
  return {
    name,
    inject,
    async run({ dir }) {
      const r = await rig(dir, opts);
      try {
        return await body(r, dir);
      } finally {
        await r.close();
      }
    },
  };
}

/** The verdict of a case that must roll back: the guest on the source, whole, and the target's image not left startable. */
async function mustRollBack(r: Rig, res: MigrationResult, evidence = ''): Promise<CaseOutcome> {
  const v = await judge(r, res, 'rolled-back');
  const t = await targetSide(r);
  return finish(res, v, `rolled back (${errText(res.error)})${evidence}; ${t.text}`, t.ok && res.outcome === 'rolled-back');
}

/** Launches 300 ms after the first reconnect; `seen` is that connection's event. */
function launchAfterReconnect(): { seen: Extract<SourceEvent, { event: 'connected' }> | undefined; onEvent: (e: SourceEvent, m: SourceMigration) => void } {
  const w: ReturnType<typeof launchAfterReconnect> = {
    seen: undefined,
    onEvent: (e, m) => {
      if (e.event === 'connected' && e.attempt > 0 && !w.seen) {
        w.seen = e;
        setTimeout(() => m.launch(), 300);
      }
    },
  };
  return w;
}

const cutDuringPresync = onRig('cut-presync', 'connection reset after 3 MiB of the initial sync (fault proxy)', { proxy: true }, async (r) => {
  r.proxy!.cutAfter('up', 3 << 20);
  const reconnect = launchAfterReconnect();
  const res = await migrate(r, { rate: 20_000_000, onEvent: reconnect.onEvent });
  const v = await judge(r, res, 'done');
  const resumed = reconnect.seen;
  const ok = resumed !== undefined && resumed.resume && resumed.heldPages > 0;
  const ev = resumed ? `reconnected and resumed: target held ${resumed.heldPages} of ${PAGES} pages, ${resumed.stalePages} to send` : 'never reconnected';
  return finish(res, v, ev, ok && res.outcome === 'done');
});

const cutDuringFinalCopy = onRig('cut-final-copy', 'connection reset while the guest is paused for the final copy', { proxy: true }, async (r) => {
  const res = await migrate(r, {
    launchAfterMs: 800,
    // Hold the final pages back, so the reset surely lands while the guest is paused in final copy.
    onEvent: (e) => e.event === 'phase' && e.phase === 'final-copy' && r.proxy!.stall(),
    controller: (c) => around(c, 'pause', async () => r.proxy!.cutAll()),
  });
  return mustRollBack(r, res);
});

const cutDuringVerify = onRig('cut-verify', 'connection reset as the verify request goes out (guest paused)', { proxy: true }, async (r) => {
  const res = await migrate(r, {
    launchAfterMs: 800,
    onEvent: (e) => e.event === 'phase' && e.phase === 'verify' && r.proxy!.cutAll(),
  });
  return mustRollBack(r, res);
});

const cutBeforeHandover = onRig('cut-before-handover', 'connection reset after a matching verify, just before HANDOVER is sent', { proxy: true }, async (r) => {
  let seen = false;
  const res = await migrate(r, {
    launchAfterMs: 800,
    onEvent: (e) => {
      if (e.event === 'phase' && e.phase === 'handover') seen = true;
    },
    // The last source-side step before HANDOVER: cut, and give the source time to notice.
    controller: (c) =>
      around(c, 'commit', async () => {
        r.proxy!.cutAll();
        await sleep(300);
      }),
  });
  return mustRollBack(r, res, seen ? ' from the handover phase, HANDOVER not sent' : '');
});

const corruptWire = onRig('corrupt-wire', 'one byte flipped in the page stream during presync (fault proxy)', { proxy: true }, async (r) => {
  // 1.5 MB into the stream: inside a PAGES frame of the initial sync.
  r.proxy!.corruptNext('up', 1_500_000, 0x40);
  const reconnect = launchAfterReconnect();
  const res = await migrate(r, { rate: 20_000_000, onEvent: reconnect.onEvent });
  const v = await judge(r, res, 'rolled-back');
  const tErr = r.targetEnds.find((e) => e.error)?.error;
  // Applied or not, every page the target holds must still be a page the writer could have written.
  let applied = -1;
  const tgt = r.atFailure[0];
  if (tgt) {
    const src = checkWriterImage(readFileSync(r.writer.image));
    tgt.writeUInt32LE(0x52575350, 0); // page 0 may not have arrived yet; its stamp is not what is checked here
    applied = checkWriterImage(tgt, src.counter, { allowZeroPages: true }).badPages.length;
  }
  const detected = tErr?.code === 'PRESYNC_ERR_CHECKSUM';
  return finish(
    res,
    v,
    `target rejected the frame with ${tErr?.code ?? 'nothing'}, image at that moment holds ${applied} bad pages; source ${reconnect.seen ? 'reconnected, resumed and ended' : 'ended'} ${res.outcome} (${errText(res.error)})`,
    detected && applied === 0,
  );
});

const diskFull: FaultCase = {
  name: 'target-disk-full',
  inject: 'target image on a 1 MiB tmpfs: writes fail with ENOSPC during presync',
  skip: () => (process.getuid?.() === 0 ? undefined : 'needs root to mount a tmpfs'),
  async run({ dir }) {
    const tiny = join(dir, 'tiny');
    mkdirSync(tiny);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'tmpfs', tiny]);
    const writer = await startWriter(dir, 'guest', PAGES).catch(async (e: unknown) => {
      execFileSync('umount', ['-l', tiny]);
      throw e;
    });
    const restart = targetRestart(dir);
    const targetImage = join(tiny, 'target.img');
    // The target agent is its own process: whatever the full disk does to it must not take the judge down too.
    const serve = spawnCli(['serve', '--listen', '127.0.0.1:0', '--image', targetImage, '--secret-file', secretFile(dir), '--on-handover', restart.command, '--json']);
    try {
      const port = Number((await serve.next((l) => l.event === 'listening')).port);
      const inner = new ProcessController(writer.pid);
      const m = new SourceMigration({
        transport: new TcpTransport(),
        to: { host: '127.0.0.1', port },
        secret: SECRET,
        imagePath: writer.image,
        policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: PAGES }, seed: 1 }),
        controller: inner,
        epochMs: 50,
        stepTimeoutMs: 10_000,
        reconnectAttempts: 2,
      });
      const timer = setTimeout(() => m.launch(), 3000);
      const res = await m.run();
      clearTimeout(timer);
      const v = res.outcome === 'done' ? await judgeDone(writer, restart, targetImage) : await judgeRolledBack(writer, restart);
      const end = await serve.next((l) => l.event === 'session-end', 5000).catch(() => undefined);
      const tErr = (end?.error as { code?: string } | null | undefined)?.code;
      const agentAlive = serve.child.exitCode === null && serve.child.signalCode === null;
      let st = 'absent';
      try {
        st = (JSON.parse(readFileSync(`${targetImage}.presync`, 'utf8')) as { state: string }).state;
      } catch {
        /* none */
      }
      const agent = agentAlive ? `target failed the session with ${tErr ?? 'nothing'}, its image ${st}` : `the target agent died (${serve.child.signalCode ?? `exit ${serve.child.exitCode}`})`;
      return finish(res, v, `${agent}; source ${res.outcome} (${errText(res.error)})`, agentAlive && tErr === 'PRESYNC_ERR_IMAGE' && st !== 'valid');
    } finally {
      writer.kill();
      serve.child.kill('SIGKILL');
      await serve.exited;
      execFileSync('umount', ['-l', tiny]);
    }
  },
};

function secretFile(dir: string): string {
  const p = join(dir, 'secret');
  writeFileSync(p, `${SECRET.toString()}\n`);
  return p;
}

function lastResult(c: CliChild): Record<string, unknown> | undefined {
  return [...c.lines].reverse().find((l) => typeof l.outcome === 'string');
}

const targetKilled: FaultCase = {
  name: 'target-killed-restarted',
  inject: 'SIGKILL of `presync serve` mid-presync, restarted on the same port and image',
  async run({ dir }) {
    const writer = await startWriter(dir, 'guest', PAGES);
    const restart = targetRestart(dir);
    const secret = secretFile(dir);
    const targetImage = join(dir, 'target.img');
    const serveArgs = (port: number) => ['serve', '--listen', `127.0.0.1:${port}`, '--image', targetImage, '--secret-file', secret, '--on-handover', restart.command, '--json'];
    let serve = spawnCli(serveArgs(0));
    try {
      const port = Number((await serve.next((l) => l.event === 'listening')).port);
      let killed = false;
      let resumed: Extract<SourceEvent, { event: 'connected' }> | undefined;
      let restarting: Promise<unknown> | undefined;
      const inner = new ProcessController(writer.pid);
      const m: SourceMigration = new SourceMigration({
        transport: new ShapedTransport(new TcpTransport(), { rate: 20_000_000 }),
        bandwidthBytesPerSec: 20_000_000,
        to: { host: '127.0.0.1', port },
        secret: SECRET,
        imagePath: writer.image,
        policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount: PAGES }, seed: 1 }),
        controller: inner,
        epochMs: 50,
        stepTimeoutMs: 10_000,
        onEvent: (e) => {
          if (e.event === 'progress' && !killed && e.status.presyncBytes >= 3 << 20) {
            killed = true;
            serve.child.kill('SIGKILL');
            restarting = serve.exited.then(() => {
              serve = spawnCli(serveArgs(port));
              return serve.next((l) => l.event === 'listening');
            });
          }
          if (e.event === 'connected' && e.attempt > 0 && !resumed) {
            resumed = e;
            setTimeout(() => m.launch(), 300);
          }
        },
      });
      const fallback = setTimeout(() => m.launch(), 20_000);
      const res = await m.run();
      clearTimeout(fallback);
      await restarting?.catch(() => undefined);
      const v = res.outcome === 'done' ? await judgeDone(writer, restart, targetImage) : await judgeRolledBack(writer, restart);
      const fewer = resumed !== undefined && resumed.resume && resumed.stalePages < PAGES;
      const ev = resumed
        ? `restarted target resumed from its image: ${resumed.heldPages} of ${PAGES} pages held, ${resumed.stalePages} re-sent`
        : `never reconnected (${errText(res.error)})`;
      return finish(res, v, ev, fewer && res.outcome === 'done');
    } finally {
      writer.kill();
      serve.child.kill('SIGKILL');
      await serve.exited;
    }
  },
};

const sourceKilled = onRig(
  'source-agent-killed',
  'SIGKILL of `presync migrate` while it holds the guest paused (final copy); recovered by `presync migrate --recover`',
  { proxy: true },
  async (r, dir) => {
    const secret = secretFile(dir);
    // precopy with --downtime-limit 10s: the pause follows launch at once, with no live round whose
    // acknowledgements the stall below would hold back while the guest still runs.
    const mig = spawnCli(['migrate', '--image', r.writer.image, '--to', `127.0.0.1:${r.to.port}`, '--secret-file', secret, '--pid', String(r.writer.pid), '--policy', 'precopy', '--epoch', '50ms', '--downtime-limit', '10s', '--launch-after', '800ms', '--json']);
    try {
      // Hold the target's answers back from launch on: the agent then waits, with the guest paused,
      // for acknowledgements of its final copy (or for the verify result), and dies there.
      await mig.next((l) => l.event === 'phase' && l.phase === 'launched');
      r.proxy!.stall(undefined, 'down');
      await waitFor('the guest to be paused', () => processState(r.writer.pid) === 'T', 5000);
      const lockState = readLock(r.writer.image)?.state;
      mig.child.kill('SIGKILL');
      await mig.exited;
      const stillStopped = processState(r.writer.pid) === 'T';
      // The target notices the dead connection and invalidates its image.
      r.proxy!.cutAll();
      const rec = await runCli(['migrate', '--image', r.writer.image, '--recover', '--json']);
      const action = rec.lines.find((l) => l.event === 'recover')?.action;
      await waitFor('the target session to end', () => r.targetEnds.length > 0, 10_000).catch(() => undefined);
      const v = await judgeRolledBack(r.writer, r.restart);
      const tState = existsSync(`${r.targetImage}.presync`) ? (JSON.parse(readFileSync(`${r.targetImage}.presync`, 'utf8')) as { state: string }).state : 'absent';
      const ok = lockState === 'paused' && stillStopped && rec.code === 0 && action === 'resumed' && !existsSync(lockPath(r.writer.image)) && tState !== 'valid';
      return finish(
        { outcome: 'rolled-back' },
        v,
        `agent killed with the guest stopped (lock said ${lockState}); recover: ${String(action)} (exit ${rec.code}); target image ${tState}`,
        ok,
      );
    } finally {
      mig.child.kill('SIGKILL');
    }
  },
);

const secondMigration = onRig('second-migration-refused', 'a second `presync migrate` of the same guest while the first runs', {}, async (r, dir) => {
  const secret = secretFile(dir);
  const args = ['migrate', '--image', r.writer.image, '--to', `127.0.0.1:${r.to.port}`, '--secret-file', secret, '--pid', String(r.writer.pid), '--policy', 'presync-naive', '--epoch', '50ms', '--json'];
  // The first launches only on command, after the second has been refused: no race with process start-up.
  const control = join(dir, 'control.sock');
  const first = spawnCli([...args, '--control', control]);
  try {
    await waitFor('the first migration to take the lock', () => existsSync(lockPath(r.writer.image)) && existsSync(control), CLI_HANG_GUARD_MS);
    const second = await runCli([...args, '--launch-after', '100ms']);
    const refused = second.code !== 0 && second.stderr.includes('PRESYNC_ERR_LOCKED');
    await runCli(['launch', '--control', control]);
    const code = await first.exited;
    const res = lastResult(first);
    const outcome = String(res?.outcome ?? 'failed');
    const v = outcome === 'done' ? await judgeDone(r.writer, r.restart, r.targetImage) : await judgeRolledBack(r.writer, r.restart);
    return finish(
      { outcome },
      v,
      `second migrate exited ${second.code} with ${refused ? 'PRESYNC_ERR_LOCKED' : JSON.stringify(second.stderr.slice(0, 300))}; first exited ${code}, ${outcome}`,
      refused && outcome === 'done' && code === 0,
    );
  } finally {
    first.child.kill('SIGKILL');
  }
});

/** Flips one byte in every page of `path` from another process, as a stray writer on the target host would. */
function tamperEveryPage(path: string, pages: number): void {
  const js =
    `const fs=require('fs');const fd=fs.openSync(${JSON.stringify(path)},'r+');const b=Buffer.alloc(1);` +
    `for(let i=0;i<${pages};i++){fs.readSync(fd,b,0,1,i*${PAGE}+2047);b[0]^=0xff;fs.writeSync(fd,b,0,1,i*${PAGE}+2047)}fs.closeSync(fd)`;
  execFileSync(process.execPath, ['-e', js]);
}

const targetTamperedPresync: FaultCase = {
  name: 'target-tampered-presync',
  inject: 'another process flips a byte in every page of the target image during presync',
  async run({ dir }) {
    const r = await rig(dir);
    try {
      let tampered = false;
      const res = await migrate(r, {
        onEvent: (e, m) => {
          if (tampered || e.event !== 'progress' || e.status.epoch < 6) return;
          tampered = true;
          tamperEveryPage(r.targetImage, PAGES);
          // Launch once the background re-verification has had the damage resent.
          // (Pages the writer rewrote meanwhile are mended by its own resends.)
          void waitFor('the target to report the damage', () => r.repairs.presync > 0, 10_000)
            .catch(() => undefined)
            .then(() => sleep(3000))
            .then(() => m.launch());
        },
      });
      const v = await judge(r, res, 'done');
      const ev = `target found ${r.repairs.presync} damaged pages during presync and ${r.repairs.verify} at the verify; ${res.outcome} (${errText(res.error)})`;
      return finish(res, v, ev, tampered && r.repairs.presync > 0 && res.outcome === 'done');
    } finally {
      await r.close();
    }
  },
};

const targetTamperedPaused: FaultCase = {
  name: 'target-tampered-paused',
  inject: 'another process flips a byte in every page of the target image while the guest is paused',
  async run({ dir }) {
    const r = await rig(dir);
    try {
      const res = await migrate(r, { launchAfterMs: 800, controller: (c) => around(c, 'pause', async () => tamperEveryPage(r.targetImage, PAGES)) });
      const v = await judge(r, res, 'done');
      const ev = `the verify re-read found ${r.repairs.verify} damaged pages; ${res.outcome} (${errText(res.error)})`;
      // Repaired (done, byte-identical: judged above) or rolled back; never done with a difference.
      return finish(res, v, ev, r.repairs.verify > 0 && (res.outcome === 'done' || res.outcome === 'rolled-back'));
    } finally {
      await r.close();
    }
  },
};

const hookFails: FaultCase = {
  name: 'handover-hook-fails',
  inject: "`--on-handover` exits 3 before it started the application ('echo … >&2; exit 3')",
  async run({ dir }) {
    const r = await rig(dir, { hook: commandHook('echo "app: missing config" >&2; exit 3', { logDir: dir }) });
    try {
      const res = await migrate(r, { launchAfterMs: 800 });
      const v = await judge(r, res, 'rolled-back');
      const t = await targetSide(r);
      const stderrTail = res.error?.message.includes('app: missing config') === true;
      const ev = `rolled back (${errText(res.error)}${stderrTail ? ', with the hook\'s stderr' : ''}); ${t.text}`;
      return finish(res, v, ev, t.ok && res.outcome === 'rolled-back' && res.error?.code === 'PRESYNC_ERR_HANDOVER_HOOK' && stderrTail);
    } finally {
      await r.close();
    }
  },
};

const sigintWhilePaused: FaultCase = {
  name: 'sigint-while-paused',
  inject: 'SIGINT to `presync migrate` while it holds the guest paused (final copy), then a second SIGINT',
  async run({ dir }) {
    const r = await rig(dir, { proxy: true });
    const secret = secretFile(dir);
    const control = join(dir, 'control.sock');
    const mig = spawnCli(['migrate', '--image', r.writer.image, '--to', `127.0.0.1:${r.to.port}`, '--secret-file', secret, '--pid', String(r.writer.pid), '--policy', 'precopy', '--epoch', '50ms', '--downtime-limit', '10s', '--launch-after', '800ms', '--control', control, '--json']);
    try {
      // The target's answers held back from launch on: the agent waits with the guest paused.
      await mig.next((l) => l.event === 'phase' && l.phase === 'launched');
      r.proxy!.stall(undefined, 'down');
      await waitFor('the guest to be paused', () => processState(r.writer.pid) === 'T', 5000);
      mig.child.kill('SIGINT');
      await sleep(30);
      mig.child.kill('SIGINT');
      const code = await mig.exited;
      const res = lastResult(mig);
      r.proxy!.cutAll();
      const t = await targetSide(r);
      const v = await judgeRolledBack(r.writer, r.restart);
      const leftovers = [existsSync(lockPath(r.writer.image)) ? 'lock' : '', existsSync(control) ? 'control socket' : ''].filter(Boolean);
      const ok = res?.outcome === 'rolled-back' && (res.error as { code?: string } | null)?.code === 'PRESYNC_ERR_ABORTED' && code === 3 && leftovers.length === 0 && t.ok;
      return finish(
        { outcome: String(res?.outcome ?? 'failed') },
        v,
        `exit ${code}, ${String(res?.outcome)} (${errText(res?.error as { code: string; message: string } | null)}); ${leftovers.length ? `left behind: ${leftovers.join(', ')}` : 'no lock or control socket left'}; ${t.text}`,
        ok,
      );
    } finally {
      mig.child.kill('SIGKILL');
      await r.close();
    }
  },
};

const hardLinkRefused: FaultCase = {
  name: 'second-migration-hard-link',
  inject: 'a second `presync migrate` of the same guest through a hard link to its image, while the first runs',
  async run({ dir }) {
    const r = await rig(dir);
    const secret = secretFile(dir);
    const alias = join(dir, 'other-name.img');
    linkSync(r.writer.image, alias);
    const control = join(dir, 'control.sock');
    const first = spawnCli(['migrate', '--image', r.writer.image, '--to', `127.0.0.1:${r.to.port}`, '--secret-file', secret, '--pid', String(r.writer.pid), '--policy', 'presync-naive', '--epoch', '50ms', '--control', control, '--json']);
    try {
      await waitFor('the first migration to take the lock', () => existsSync(lockPath(r.writer.image)) && existsSync(control), CLI_HANG_GUARD_MS);
      // A second target: were the link a different guest, it would be migrated there too.
      const second = await runCli(['migrate', '--image', alias, '--to', `127.0.0.1:${r.to.port}`, '--secret-file', secret, '--pid', String(r.writer.pid), '--launch-after', '100ms', '--json']);
      const refused = second.code === 1 && second.stderr.includes('PRESYNC_ERR_LOCKED');
      await runCli(['launch', '--control', control]);
      const code = await first.exited;
      const res = lastResult(first);
      const outcome = String(res?.outcome ?? 'failed');
      const v = outcome === 'done' ? await judgeDone(r.writer, r.restart, r.targetImage) : await judgeRolledBack(r.writer, r.restart);
      return finish(
        { outcome },
        v,
        `through the link: exit ${second.code} with ${refused ? 'PRESYNC_ERR_LOCKED' : JSON.stringify(second.stderr.slice(0, 300))}; first exited ${code}, ${outcome}`,
        refused && outcome === 'done' && code === 0,
      );
    } finally {
      first.child.kill('SIGKILL');
      await r.close();
    }
  },
};

const guestExits: FaultCase = {
  name: 'guest-exits',
  inject: 'the guest process exits by itself during presync',
  async run({ dir }) {
    const r = await rig(dir);
    const secret = secretFile(dir);
    const mig = spawnCli(['migrate', '--image', r.writer.image, '--to', `127.0.0.1:${r.to.port}`, '--secret-file', secret, '--pid', String(r.writer.pid), '--epoch', '50ms', '--launch-after', '30s', '--json']);
    try {
      await mig.next((l) => l.event === 'connected', 20_000);
      r.writer.child.kill('SIGTERM');
      const code = await mig.exited;
      const res = lastResult(mig);
      const t = await targetSide(r);
      const started = r.restart.starts.count > 0;
      const gone = (res?.error as { code?: string } | null)?.code === 'PRESYNC_ERR_GUEST_GONE';
      // The fault itself ends the guest: "running once" means presync started no copy of it anywhere.
      return {
        outcome: res?.outcome === 'rolled-back' ? 'rolled-back' : 'failed',
        guestRunning: !started,
        memoryVerified: t.ok,
        lostPages: 0,
        detail: `exit ${code}, ${String(res?.outcome)} (${errText(res?.error as { code: string; message: string } | null)}); nothing started on the target; ${t.text}; ${existsSync(lockPath(r.writer.image)) ? 'lock left behind' : 'no lock left'}`,
        checks: gone && code === 1 && !existsSync(lockPath(r.writer.image)),
      } as const;
    } finally {
      mig.child.kill('SIGKILL');
      await r.close();
    }
  },
};

export const RAM_CASES: readonly FaultCase[] = [
  cutDuringPresync,
  cutDuringFinalCopy,
  cutDuringVerify,
  cutBeforeHandover,
  corruptWire,
  targetKilled,
  sourceKilled,
  diskFull,
  secondMigration,
  targetTamperedPresync,
  targetTamperedPaused,
  hookFails,
  hardLinkRefused,
  sigintWhilePaused,
  guestExits,
];

