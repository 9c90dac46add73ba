import type { Workload, WorkloadParams } from '../workload.ts';
import { ComposedWorkload } from './composed.ts';
import { guestLayout, pagesFor, type Layout, type RegionRequest } from './layout.ts';
import { checkParams, resolveOptions, type OptionSpecs } from './options.ts';
import { OS_OPTIONS, osBackground, periodicBuffers, poissonPages, streamRing, type WriteSource } from './patterns.ts';
import { hashUnit } from './time.ts';

export const AUDIO_OPTIONS = {
  ...OS_OPTIONS,
  sampleRate: { default: 44100, min: 8000, max: 384000, integer: true, doc: 'PCM sample rate, Hz' },
  channels: { default: 2, min: 1, max: 8, integer: true, doc: 'PCM channels (16-bit samples)' },
  frameSamples: { default: 1152, min: 64, max: 65536, integer: true, doc: 'samples per decoder frame (MP3: 1152 → 26.1 ms)' },
  pcmRingMs: { default: 500, min: 10, max: 10000, doc: 'length of the player’s PCM ring, ms' },
  bitrateKbps: { default: 128, min: 8, max: 10000, doc: 'compressed stream bitrate, kbit/s' },
  readAheadKiB: { default: 128, min: 4, max: 65536, doc: 'page-cache read-ahead chunk, KiB (Linux read_ahead_kb)' },
  uiHz: { default: 1, min: 0, max: 240, doc: 'progress/time display updates per second' },
  heapChurnPerSec: { default: 5, min: 0, max: 1e6, doc: 'random heap page writes per second' },
  nonZeroFraction: { default: 0.5, min: 0, max: 1, doc: 'fraction of the guest non-zero at start' },
} as const satisfies OptionSpecs;

/** The audio path's knobs, shared with `movie`, which plays a soundtrack. */
export interface AudioPathOptions {
  readonly sampleRate: number;
  readonly channels: number;
  readonly frameSamples: number;
  readonly pcmRingMs: number;
  /** Bytes/s of the compressed audio read from the file; 0 when another stream carries it. */
  readonly fileBytesPerSec: number;
  readonly readAheadKiB: number;
}

/** ALSA hardware buffer: 64 KiB, refilled one 4 KiB period at a time. */
const DMA_RING_BYTES = 64 * 1024;
const DMA_PERIOD_BYTES = 4096;
/** Decoder state (synthesis filterbank, ~20 KiB), bitstream buffer and one frame of output staging. */
const DECODER_BYTES = 32 * 1024;

export function audioRegions(pageCount: number, pageSize: number, o: AudioPathOptions): RegionRequest[] {
  const pcmBytes = Math.ceil((o.sampleRate * o.channels * 2 * o.pcmRingMs) / 1000);
  const out: RegionRequest[] = [
    { name: 'audio-pcm', pages: pagesFor(pcmBytes, pageSize) },
    { name: 'audio-dma', pages: pagesFor(DMA_RING_BYTES, pageSize) },
    { name: 'audio-decoder', pages: pagesFor(DECODER_BYTES, pageSize) },
  ];
  // Page cache for the compressed file: a 10-minute file, at most a tenth of the guest.
  if (o.fileBytesPerSec > 0) out.push({ name: 'audio-file', pages: Math.min(pagesFor(o.fileBytesPerSec * 600, pageSize), Math.max(1, Math.floor(pageCount / 10))) });
  return out;
}

/** The playback path: decode → PCM ring → DMA ring, plus file read-ahead. */
export function audioPatterns(seed: number, stream: number, layout: Layout, pageSize: number, o: AudioPathOptions): WriteSource[] {
  const pcmBytesPerSec = o.sampleRate * o.channels * 2;
  const frameBytes = o.frameSamples * o.channels * 2;
  const frameMs = (o.frameSamples / o.sampleRate) * 1000;
  const phase = (i: number, periodMs: number): number => hashUnit(seed, stream, i) * periodMs;
  const pcm = layout.region('audio-pcm');
  const decoder = layout.region('audio-decoder');
  const out: WriteSource[] = [
    streamRing({ region: pcm, pageSize, ringBytes: pcmBytesPerSec * (o.pcmRingMs / 1000), bytesPerSec: pcmBytesPerSec, chunkBytes: frameBytes, phaseMs: phase(0, frameMs) }),
    streamRing({ region: layout.region('audio-dma'), pageSize, ringBytes: DMA_RING_BYTES, bytesPerSec: pcmBytesPerSec, chunkBytes: DMA_PERIOD_BYTES, phaseMs: phase(1, (DMA_PERIOD_BYTES / pcmBytesPerSec) * 1000) }),
    periodicBuffers({ region: decoder, periodMs: frameMs, phaseMs: phase(2, frameMs), bufferPages: decoder.pages, poolSize: 1, writeMs: 0 }),
  ];
  if (o.fileBytesPerSec > 0) {
    const file = layout.region('audio-file');
    const chunk = o.readAheadKiB * 1024;
    out.push(streamRing({ region: file, pageSize, ringBytes: file.pages * pageSize, bytesPerSec: o.fileBytesPerSec, chunkBytes: chunk, phaseMs: phase(3, (chunk / o.fileBytesPerSec) * 1000) }));
  }
  return out;
}

/**
 * `audio`: a music player (mpg123-like) playing a 128 kbit/s MP3.
 *
 * Writes, with the defaults:
 * - decoder frames of 1152 samples every 26.1 ms each rewrite the decoder's
 *   8 pages (filterbank state ~20 KiB, bitstream buffer, output staging);
 * - each frame appends 1152 × 2 ch × 2 B = 4608 B to a 500 ms PCM ring:
 *   44 100 × 2 × 2 = 176.4 kB/s into 22 pages, every page rewritten twice a
 *   second;
 * - the kernel copies the same stream into the 64 KiB (16-page) ALSA DMA ring
 *   in 4 KiB periods every 23.2 ms;
 * - the compressed file (16 kB/s) is read ahead into the page cache in
 *   128 KiB chunks, one every 8.2 s, each page written once;
 * - the progress display redraws 4 pages once a second; 5 heap pages/s churn;
 * - the idle OS background (≈ 11 pages/s).
 *
 * Dirty rate with defaults, 256 MiB guest: 22 + 16 + 8 + 4 (read-ahead on
 * average) + 4 + 5 + 11 ≈ 70 distinct pages/s (≈ 290 kB/s), documented range
 * 50–100 pages/s (measured over 1 s windows); 98 % of the writes land in a
 * hot set of ~60 pages.
 *
 * Non-zero at start: 50 % of the guest: kernel (32 MiB), the player's regions,
 * and three filler regions (libraries, other processes, page cache).
 */
export function createAudio(p: WorkloadParams): Workload {
  const g = checkParams('audio', p);
  const o = resolveOptions('audio', AUDIO_OPTIONS, p.options);
  const path: AudioPathOptions = { ...o, fileBytesPerSec: (o.bitrateKbps * 1000) / 8 };
  const requests: RegionRequest[] = [
    ...audioRegions(g.pageCount, g.pageSize, path),
    { name: 'ui', pages: 4 },
    { name: 'heap', pages: pagesFor(2 * 1024 * 1024, g.pageSize) },
  ];
  const layout = guestLayout(g.pageCount, g.pageSize, p.seed, requests, o.nonZeroFraction);
  const ui = layout.region('ui');
  const uiPeriodMs = o.uiHz > 0 ? 1000 / o.uiHz : 0;
  const sources: WriteSource[] = [
    ...audioPatterns(p.seed, 10, layout, g.pageSize, path),
    periodicBuffers({ region: ui, periodMs: uiPeriodMs, phaseMs: hashUnit(p.seed, 20, 0) * uiPeriodMs, bufferPages: ui.pages, poolSize: 1, writeMs: 0 }),
    poissonPages({ seed: p.seed, stream: 21, region: layout.region('heap'), ratePerSec: o.heapChurnPerSec, pagesPerEvent: 1 }),
    osBackground({ seed: p.seed, stream: 1, kernel: layout.region('kernel'), ...o }),
  ];
  const desc = `audio playback: ${o.sampleRate} Hz × ${o.channels} ch PCM into a ${o.pcmRingMs} ms ring, ${o.frameSamples}-sample decoder frames, ${o.bitrateKbps} kbit/s file read ahead in ${o.readAheadKiB} KiB chunks`;
  return new ComposedWorkload('audio', g, layout.nonZero, sources, desc);
}
