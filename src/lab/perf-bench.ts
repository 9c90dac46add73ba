import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PageSet } from '../core/pageset.ts';
import { createPolicy } from '../core/policies/registry.ts';
import { Rng } from '../core/rng.ts';
import type { EpochObservation } from '../core/types.ts';
import { SourceMigration } from '../engine/source-session.ts';
import { ImageOnlyController } from '../guest/controller.ts';
import { DirtyScanner } from '../guest/dirty-scanner.ts';
import { RamImageReader } from '../guest/ram-image.ts';
import { nativePageHash } from '../native/pagehash.ts';
import { TcpTransport } from '../transport/tcp.ts';
import { initDigest } from '../native/page-digest.ts';
import { lz4Codec } from '../wire/page-codecs.ts';
import { decodePage, encodePages } from '../wire/pages.ts';
import { AGENT_START_GUARD_MS, JsonChild } from './child-json.ts';
import { anonRssBytes, median, timeIt, writeDataImage } from './perf-measure.ts';

const PAGE = 4096;
const MiB = 1 << 20;
const GiB = 1 << 30;

export interface ScanResult {
  readonly imageBytes: number;
  readonly dirtyFraction: number;
  /** Full scan (hash every page, compare, list the changed ones), median ms. */
  readonly fullScanMs: number;
  readonly fullScanMsPerGiB: number;
  /** Incremental scan (recent + rotating 1/8 slice), median ms. */
  readonly incrementalScanMs: number;
  readonly runs: number;
}

export interface PolicyCost {
  readonly policy: string;
  readonly pageCount: number;
  /** decide() per epoch, 1 % of the pages written per epoch, 5 % stale at the start: median wall µs. */
  readonly decideUs: number;
  /** The same, CPU µs (process.cpuUsage: not inflated by other processes on a shared machine). */
  readonly decideCpuUs: number;
  /** decide() per epoch during the initial copy (every page stale at the start), median wall µs. */
  readonly initialDecideUs: number;
  readonly initialDecideCpuUs: number;
}

export interface CodecResult {
  readonly codec: string;
  readonly encodeMBps: number;
  readonly decodeMBps: number;
  /** Wire payload ÷ raw bytes, on half text-like, half random pages. */
  readonly ratio: number;
}

export interface SyncResult {
  readonly imageBytes: number;
  readonly streams: number;
  /** From the start of the migration until the target held every page. */
  readonly syncMs: number;
  readonly syncBytesPerSec: number;
  readonly verified: boolean;
  /** Source process: peak anonymous RSS above the level before the migration, bytes. */
  readonly sourceAnonPeakDeltaBytes: number;
}

export interface MemoryOverhead {
  /** Source per page: scan digests + sent digests (8 B each), stale/sent/accounting page sets (bits). */
  readonly accountedSourceBytesPerPage: number;
  /** Target per page: its digest table. */
  readonly accountedTargetBytesPerPage: number;
  readonly accountedFraction: number;
  /** Measured: peak anonymous RSS delta of the source during a full sync ÷ guest bytes. */
  readonly measuredFraction: number;
  readonly imageBytes: number;
}

export interface PerfBenchOptions {
  readonly sizes: readonly number[];
  readonly dirtyFraction?: number;
  readonly runs?: number;
  /** Image size for the end-to-end sync and memory measurement; default 1 GiB. */
  readonly syncBytes?: number;
  readonly streams?: readonly number[];
  readonly dir?: string;
  readonly onStep?: (what: string) => void;
}

function workDir(dir?: string): string {
  return mkdtempSync(join(dir ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir()), 'presync-perf-'));
}

/** Dirties `fraction` of the pages of the file at random (one changed word per page). */
function dirtyPages(path: string, pageCount: number, fraction: number, rng: Rng): void {
  const fd = openSync(path, 'r+');
  try {
    const word = Buffer.alloc(8);
    const n = Math.round(pageCount * fraction);
    for (let i = 0; i < n; i++) {
      word.writeDoubleLE(rng.next() + 1);
      writeSync(fd, word, 0, 8, Math.floor(rng.next() * pageCount) * PAGE + 64);
    }
  } finally {
    closeSync(fd);
  }
}

export async function benchScan(bytes: number, o: { dirtyFraction: number; runs: number; dir?: string }): Promise<ScanResult> {
  await initDigest();
  const dir = workDir(o.dir);
  try {
    const path = join(dir, 'scan.img');
    writeDataImage(path, bytes);
    const pageCount = bytes / PAGE;
    const reader = RamImageReader.open(path);
    const scanner = new DirtyScanner(reader);
    scanner.scan();
    const rng = new Rng(7);
    const prepare = () => dirtyPages(path, pageCount, o.dirtyFraction, rng);
    const full = await timeIt(() => scanner.scan(), { runs: o.runs, warmup: 1, prepare });
    const inc = await timeIt(() => scanner.scanIncremental({ sliceFraction: 1 / 8 }), { runs: o.runs, warmup: 1, prepare });
    reader.close();
    return {
      imageBytes: bytes,
      dirtyFraction: o.dirtyFraction,
      fullScanMs: full.medianMs,
      fullScanMsPerGiB: (full.medianMs * GiB) / bytes,
      incrementalScanMs: inc.medianMs,
      runs: o.runs,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const POLICIES = ['presync-naive', 'presync-predict', 'presync-slowstart', 'presync', 'precopy'];

/**
 * One policy's decide() over `epochs` epochs of a guest that writes 1 % of
 * its pages at random each epoch, starting from `stale0` stale pages; the
 * shell sends what fits 1 Gbit/s. Returns per-epoch wall and CPU µs.
 */
function runDecides(name: string, pageCount: number, stale0: number, epochs: number): { wall: number[]; cpu: number[] } {
  const geometry = { pageSize: PAGE, pageCount };
  const policy = createPolicy(name, { geometry, seed: 1 });
  const rng = new Rng(3);
  const stale = stale0 >= pageCount ? PageSet.full(pageCount) : new PageSet(pageCount);
  if (stale0 < pageCount) for (let i = 0; i < stale0; i++) stale.add(Math.floor(rng.next() * pageCount));
  const wall: number[] = [];
  const cpu: number[] = [];
  let consumed = 0;
  for (let e = 0; e < epochs; e++) {
    const dirty = new PageSet(pageCount);
    for (let i = 0; i < pageCount / 100; i++) dirty.add(Math.floor(rng.next() * pageCount));
    stale.unionWith(dirty);
    const obs: EpochObservation = {
      epoch: e,
      timeMs: e * 100,
      epochMs: 100,
      phase: 'presync',
      geometry,
      dirty,
      stale,
      net: { bandwidthBytesPerSec: 125e6, rttMs: 1, bytesInFlight: 0, offeredBytes: 1e6, deliveredBytes: 1e6 },
      guestSlowdown: 0,
      consumed,
      wireBytesPerPage: PAGE + 24,
    };
    const c0 = process.cpuUsage();
    const t = performance.now();
    const d = policy.decide(obs);
    wall.push((performance.now() - t) * 1000);
    const c = process.cpuUsage(c0);
    cpu.push(c.user + c.system);
    // Pretend the shell sent what fitted, so the stale set stays realistic.
    const n = Math.min(d.send.length, Math.floor(d.budgetBytes / (PAGE + 24)));
    for (let i = 0; i < n; i++) stale.delete(d.send[i]);
    consumed = n;
  }
  return { wall, cpu };
}

/** Epochs measured per policy and size; the first WARMUP_EPOCHS (first sight of the guest) are left out. */
const POLICY_EPOCHS = 30;
const WARMUP_EPOCHS = 4;

export function benchPolicies(pageCounts: readonly number[], epochs = POLICY_EPOCHS): PolicyCost[] {
  const out: PolicyCost[] = [];
  const warm = Math.min(WARMUP_EPOCHS, Math.floor(epochs / 2));
  for (const pageCount of pageCounts) {
    for (const name of POLICIES) {
      const steady = runDecides(name, pageCount, Math.round(pageCount / 20), epochs);
      const initial = runDecides(name, pageCount, pageCount, epochs);
      out.push({
        policy: name,
        pageCount,
        decideUs: median(steady.wall.slice(warm)),
        decideCpuUs: median(steady.cpu.slice(warm)),
        initialDecideUs: median(initial.wall.slice(warm)),
        initialDecideCpuUs: median(initial.cpu.slice(warm)),
      });
    }
  }
  return out;
}

export async function benchCodecs(bytes = 32 * MiB): Promise<CodecResult[]> {
  await initDigest();
  const pages = bytes / PAGE;
  const image = new Uint8Array(bytes);
  const rng = new Rng(11);
  const words = 'the quick brown fox jumps over the lazy dog presync migrates pages '.split(' ');
  for (let p = 0; p < pages; p++) {
    const page = image.subarray(p * PAGE, (p + 1) * PAGE);
    if (p % 2) for (let i = 0; i < PAGE; i++) page[i] = Math.floor(rng.next() * 256);
    else {
      let at = 0;
      while (at < PAGE) {
        const w = words[Math.floor(rng.next() * words.length)] + ' ';
        for (let i = 0; i < w.length && at < PAGE; i++) page[at++] = w.charCodeAt(i);
      }
    }
  }
  const idx = Uint32Array.from({ length: pages }, (_, i) => i);
  const geometry = { pageSize: PAGE, pageCount: pages };
  const out: CodecResult[] = [];
  const codecs: Array<'none' | 'deflate' | 'lz4'> = ['none', 'deflate', ...(lz4Codec() ? (['lz4'] as const) : [])];
  for (const codec of codecs) {
    let recs = encodePages(image, idx, { pageSize: PAGE, codec });
    const enc = await timeIt(() => (recs = encodePages(image, idx, { pageSize: PAGE, codec })), { runs: 3 });
    const dec = await timeIt(() => {
      for (const r of recs) decodePage(r, geometry);
    }, { runs: 3 });
    let wire = 0;
    for (const r of recs) wire += r.payload.length;
    out.push({ codec, encodeMBps: bytes / 1e6 / (enc.medianMs / 1000), decodeMBps: bytes / 1e6 / (dec.medianMs / 1000), ratio: wire / bytes });
  }
  return out;
}

/**
 * Full initial sync of a data-filled image over loopback, unshaped: the
 * target agent in its own process (as on another host), the source in this
 * one, whose anonymous memory is sampled throughout.
 */
export async function benchSync(bytes: number, o: { streams?: number; dir?: string } = {}): Promise<SyncResult> {
  await initDigest();
  const dir = workDir(o.dir);
  let serve: JsonChild | undefined;
  try {
    const src = join(dir, 'src.img');
    writeDataImage(src, bytes);
    const secret = Buffer.from('perf-bench-secret-0123456789abcdef');
    writeFileSync(join(dir, 'secret'), secret);
    serve = JsonChild.cli(['serve', '--listen', '127.0.0.1:0', '--image', join(dir, 'dst.img'), '--secret-file', join(dir, 'secret'), '--json']);
    const port = await serve.listeningPort(AGENT_START_GUARD_MS);
    global.gc?.();
    const base = anonRssBytes();
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, anonRssBytes())), 20);
    const pageCount = bytes / PAGE;
    let syncMs = -1;
    const start = performance.now();
    const m = new SourceMigration({
      transport: new TcpTransport(),
      to: { host: '127.0.0.1', port },
      secret,
      imagePath: src,
      policy: createPolicy('presync-naive', { geometry: { pageSize: PAGE, pageCount }, seed: 1 }),
      controller: new ImageOnlyController(),
      streams: o.streams ?? 1,
      onEvent: (e) => {
        if (e.event === 'progress' && syncMs < 0 && e.status.stalePages === 0) {
          syncMs = performance.now() - start;
          m.launch();
        }
      },
    });
    const r = await m.run();
    clearInterval(sampler);
    peak = Math.max(peak, anonRssBytes());
    if (r.outcome !== 'done') throw new Error(`sync bench migration ${r.outcome}: ${r.error?.code} ${r.error?.message}`);
    return { imageBytes: bytes, streams: o.streams ?? 1, syncMs, syncBytesPerSec: (bytes / syncMs) * 1000, verified: r.verified, sourceAnonPeakDeltaBytes: peak - base };
  } finally {
    await serve?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The engine's own per-page structures, by construction (see source-session.ts, target-image.ts). */
export function accountedBytesPerPage(): { source: number; target: number } {
  // Source: scanner digests + sent digests (8 B each); stale, everSent, accounting
  // sets (1 bit each, a few of them); the scanner's recent-dirty history (4 bits).
  const source = 8 + 8 + (3 + 4 + 2) / 8;
  // Target: its digest table.
  return { source, target: 8 };
}

export interface PerfReport {
  readonly scans: ScanResult[];
  readonly policies: PolicyCost[];
  readonly codecs: CodecResult[];
  readonly sync: SyncResult[];
  readonly memory: MemoryOverhead;
  readonly native: boolean;
}

export async function runPerfBench(o: PerfBenchOptions): Promise<PerfReport> {
  const step = o.onStep ?? (() => undefined);
  const scans: ScanResult[] = [];
  for (const bytes of o.sizes) {
    step(`scan ${bytes / MiB} MiB`);
    scans.push(await benchScan(bytes, { dirtyFraction: o.dirtyFraction ?? 0.1, runs: o.runs ?? 5, ...(o.dir ? { dir: o.dir } : {}) }));
  }
  step('policies');
  const policies = benchPolicies(o.sizes.map((b) => b / PAGE));
  step('codecs');
  const codecs = await benchCodecs();
  const sync: SyncResult[] = [];
  const syncBytes = o.syncBytes ?? GiB;
  for (const streams of o.streams ?? [1]) {
    step(`sync ${syncBytes / MiB} MiB, ${streams} stream(s)`);
    sync.push(await benchSync(syncBytes, { streams, ...(o.dir ? { dir: o.dir } : {}) }));
  }
  const acc = accountedBytesPerPage();
  const measured = Math.min(...sync.map((s) => s.sourceAnonPeakDeltaBytes));
  const memory: MemoryOverhead = {
    accountedSourceBytesPerPage: acc.source,
    accountedTargetBytesPerPage: acc.target,
    accountedFraction: acc.source / PAGE,
    measuredFraction: measured / syncBytes,
    imageBytes: syncBytes,
  };
  return { scans, policies, codecs, sync, memory, native: nativePageHash !== null };
}
