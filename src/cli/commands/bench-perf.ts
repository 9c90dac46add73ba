import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import { runPerfBench, type PerfReport } from '../../lab/perf-bench.ts';
import type { QemuSideBySide } from '../../lab/perf-qemu.ts';
import { parseFlags } from '../args.ts';
import { jsonLine } from '../common.ts';
import type { CommandIO } from '../io.ts';

const USAGE = 'presync bench perf [--json] [--sizes 256M,1G,4G] [--sync-size 1G] [--streams 1,4] [--runs N] [--quick] [--qemu | --no-qemu] [--dir DIR]';

const MiB = 1 << 20;

function parseSize(s: string, flag: string): number {
  const m = /^(\d+)([MG])i?B?$/i.exec(s.trim());
  if (!m) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${flag}: "${s}" is not a size like 256M or 1G`);
  const n = Number(m[1]) * (m[2].toUpperCase() === 'G' ? 1024 : 1) * MiB;
  if (n < MiB || n > 64 * 1024 * MiB) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${flag}: ${s} is outside 1M..64G`);
  return n;
}

function label(bytes: number): string {
  return bytes >= 1 << 30 ? `${bytes / (1 << 30)}GiB` : `${bytes / MiB}MiB`;
}

/** The one summary line the issue asks for, plus the full report. */
export function summaryOf(r: PerfReport, qemu: QemuSideBySide | null): Record<string, unknown> {
  const scanMsPerGiB: Record<string, number> = {};
  const scanMs: Record<string, number> = {};
  for (const s of r.scans) {
    scanMsPerGiB[label(s.imageBytes)] = s.fullScanMsPerGiB;
    scanMs[label(s.imageBytes)] = s.fullScanMs;
  }
  const s256 = r.scans.find((s) => s.imageBytes === 256 * MiB);
  const best = r.sync.reduce((a, b) => (b.syncBytesPerSec > a.syncBytesPerSec ? b : a), r.sync[0]);
  return {
    throughputRatioVsQemu: qemu?.throughputRatioVsQemu ?? null,
    scan256MiBMs: s256 ? s256.fullScanMs : null,
    memoryOverheadFraction: Math.max(r.memory.accountedFraction, r.memory.measuredFraction),
    scanMsPerGiB,
    scanMs,
    syncBytesPerSec: best?.syncBytesPerSec ?? null,
    syncStreams: best?.streams ?? null,
    qemu,
    report: r,
  };
}

export async function benchPerf(argv: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      json: { type: 'boolean' },
      sizes: { type: 'string' },
      'sync-size': { type: 'string' },
      streams: { type: 'string' },
      runs: { type: 'string' },
      quick: { type: 'boolean' },
      qemu: { type: 'boolean' },
      'no-qemu': { type: 'boolean' },
      dir: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    USAGE,
  );
  if (values.help) {
    io.out(
      `${USAGE}\n\nScan cost per GiB, policy cost per epoch, codec MB/s, full-sync throughput over loopback, memory overhead,\n` +
        `and (unless --no-qemu or --quick) stock QEMU pre-copy next to presync on the same 1 GiB guest. Medians of several runs.\n` +
        `--quick: sizes 64M,256M, sync 256M, 3 runs, no QEMU.\n`,
    );
    return 0;
  }
  const quick = values.quick === true;
  const sizes = (values.sizes ?? (quick ? '64M,256M' : '256M,1G,4G')).split(',').map((s) => parseSize(s, 'sizes'));
  const syncBytes = parseSize(values['sync-size'] ?? (quick ? '256M' : '1G'), 'sync-size');
  const streams = (values.streams ?? '1').split(',').map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1 || n > 16) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--streams: "${s}" is not 1..16`);
    return n;
  });
  const runs = values.runs ? Number(values.runs) : quick ? 3 : 5;
  if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--runs must be 1..100`);
  const progress = (what: string) => io.err(`perf: ${what}\n`);
  const r = await runPerfBench({ sizes, syncBytes, streams, runs, onStep: progress, ...(values.dir ? { dir: values.dir } : {}) });
  let qemu: QemuSideBySide | null = null;
  const wantQemu = values.qemu === true || (!quick && values['no-qemu'] !== true);
  if (wantQemu) {
    progress('QEMU side by side (1 GiB guest)');
    const { runQemuSideBySide } = await import('../../lab/perf-qemu.ts');
    qemu = await runQemuSideBySide({ streams: Math.max(...streams), onStep: progress });
  }
  const summary = summaryOf(r, qemu);
  if (!values.json) io.out(formatReport(r, summary));
  else io.out(jsonLine(summary));
  return 0;
}

function formatReport(r: PerfReport, s: Record<string, unknown>): string {
  const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : String(x));
  let out = `native hasher: ${r.native ? 'yes (mapped image, XXH64)' : 'no (WebAssembly)'}; medians of several runs on a shared machine\n\n`;
  out += 'dirty scan (full hash of every page, 10 % of pages dirtied between scans)\n';
  for (const x of r.scans) out += `  ${label(x.imageBytes).padEnd(7)} full ${f(x.fullScanMs)} ms  (${f(x.fullScanMsPerGiB)} ms/GiB)   incremental 1/8 ${f(x.incrementalScanMs)} ms\n`;
  out += '\npolicy decide() per epoch (1 % of pages written per epoch; 5 % stale at the start, or all during the initial copy), median\n';
  for (const p of r.policies) out += `  ${p.policy.padEnd(18)} ${String(p.pageCount).padStart(8)} pages  ${f(p.decideUs / 1000, 2)} ms (CPU ${f(p.decideCpuUs / 1000, 2)} ms)  initial copy ${f(p.initialDecideUs / 1000, 2)} ms (CPU ${f(p.initialDecideCpuUs / 1000, 2)} ms)\n`;
  out += '\npage codecs (half text-like, half random pages)\n';
  for (const c of r.codecs) out += `  ${c.codec.padEnd(8)} encode ${f(c.encodeMBps, 0)} MB/s  decode ${f(c.decodeMBps, 0)} MB/s  ratio ${f(c.ratio, 3)}\n`;
  out += '\nfull sync over loopback (target agent in its own process)\n';
  for (const x of r.sync) out += `  ${label(x.imageBytes)} ${x.streams} stream(s): ${f(x.syncMs, 0)} ms  ${f(x.syncBytesPerSec / 1e6, 0)} MB/s  verified ${x.verified}\n`;
  out += `\nmemory overhead: accounted ${f(r.memory.accountedSourceBytesPerPage, 2)} B/page source, ${r.memory.accountedTargetBytesPerPage} B/page target = ${f(100 * r.memory.accountedFraction, 2)} % of guest RAM; measured source peak ${f(100 * r.memory.measuredFraction, 2)} %\n`;
  const q = s.qemu as Record<string, unknown> | null;
  if (q) out += `\nQEMU side by side: ${JSON.stringify(q)}\n`;
  out += `\n${JSON.stringify({ throughputRatioVsQemu: s.throughputRatioVsQemu, scan256MiBMs: s.scan256MiBMs, memoryOverheadFraction: s.memoryOverheadFraction, scanMsPerGiB: s.scanMsPerGiB })}\n`;
  return out;
}
