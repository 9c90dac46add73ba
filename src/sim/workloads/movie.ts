import type { Workload, WorkloadParams } from '../workload.ts';
import { audioPatterns, audioRegions, type AudioPathOptions } from './audio.ts';
import { ComposedWorkload } from './composed.ts';
import { guestLayout, pagesFor, type RegionRequest } from './layout.ts';
import { checkParams, resolveOptions, type OptionSpecs } from './options.ts';
import { OS_OPTIONS, osBackground, periodicBuffers, poissonPages, streamRing, type WriteSource } from './patterns.ts';
import { hashUnit } from './time.ts';

export const MOVIE_OPTIONS = {
  ...OS_OPTIONS,
  width: { default: 1280, min: 16, max: 8192, integer: true, doc: 'frame width, pixels' },
  height: { default: 720, min: 16, max: 8192, integer: true, doc: 'frame height, pixels' },
  fps: { default: 24, min: 1, max: 240, doc: 'frames per second' },
  framePool: { default: 6, min: 1, max: 64, integer: true, doc: 'decoded (YUV 4:2:0) frame buffers: reference frames + the current one' },
  displayBuffers: { default: 2, min: 1, max: 4, integer: true, doc: 'RGBA display buffers (2 = double buffering)' },
  decodeMs: { default: 25, min: 0, max: 1000, doc: 'time to decode one frame; its buffer is written front to back over it' },
  convertMs: { default: 10, min: 0, max: 1000, doc: 'time to convert a frame to RGBA into a display buffer' },
  bitrateKbps: { default: 8000, min: 100, max: 200000, doc: 'compressed stream bitrate, kbit/s' },
  readAheadKiB: { default: 128, min: 4, max: 65536, doc: 'page-cache read-ahead chunk, KiB' },
  demuxRingKiB: { default: 2048, min: 4, max: 1048576, doc: 'demuxer input buffer (ring), KiB' },
  heapChurnPerSec: { default: 50, min: 0, max: 1e6, doc: 'random heap page writes per second (packets, subtitles, allocator)' },
  nonZeroFraction: { default: 0.6, min: 0, max: 1, doc: 'fraction of the guest non-zero at start' },
} as const satisfies OptionSpecs;

/** 64 KiB reads from the file into the demuxer, as players issue them. */
const DEMUX_READ_BYTES = 64 * 1024;

/**
 * `movie`: a video player (mplayer/VLC-like) playing 1280×720 H.264 at 24 fps,
 * 8 Mbit/s, with a 44.1 kHz stereo soundtrack.
 *
 * Writes, with the defaults:
 * - each frame is decoded as YUV 4:2:0, 1280 × 720 × 1.5 B = 1.38 MB = 338
 *   pages, front to back over 25 ms, into buffer k mod 6 of a pool of six
 *   (H.264 level 3.1 keeps up to 5 reference frames at 720p, plus the
 *   current one): 2028 pages, each rewritten every 250 ms;
 * - each frame is then converted to RGBA, 1280 × 720 × 4 B = 3.69 MB = 900
 *   pages, into display buffer k mod 2 (double buffering): 1800 pages, each
 *   rewritten every 83 ms;
 * - the stream (1 MB/s) is read ahead into the page cache in 128 KiB chunks
 *   (244 new pages/s, each written once) and copied into a 2 MiB demuxer ring
 *   in 64 KiB reads (244 pages/s);
 * - the soundtrack as in `audio` (≈ 50 pages/s), 50 heap pages/s, the OS
 *   background (≈ 11 pages/s).
 *
 * Raw write traffic is 24 × (338 + 900) pages ≈ 29 700 pages/s ≈ 120 MB/s,
 * but concentrated on a hot set of ≈ 3 800 pages.
 * Dirty rate with defaults, 256 MiB guest: 2028 + 1800 + 244 + 244 + 50 + 50 +
 * 11 ≈ 4 400 distinct pages/s (≈ 18 MB/s), documented range 4 000–4 800
 * pages/s (measured over 1 s windows); a 100 ms epoch sees ≈ 2 700.
 *
 * Non-zero at start: 60 % of the guest: kernel (32 MiB), the player's regions
 * (frame pools, page cache of the file up to a quarter of the guest), and
 * three filler regions.
 */
export function createMovie(p: WorkloadParams): Workload {
  const g = checkParams('movie', p);
  const o = resolveOptions('movie', MOVIE_OPTIONS, p.options);
  const ps = g.pageSize;
  const streamBytesPerSec = (o.bitrateKbps * 1000) / 8;
  const framePages = pagesFor(o.width * o.height * 1.5, ps);
  const displayPages = pagesFor(o.width * o.height * 4, ps);
  const audio: AudioPathOptions = { sampleRate: 44100, channels: 2, frameSamples: 1152, pcmRingMs: 500, fileBytesPerSec: 0, readAheadKiB: o.readAheadKiB };
  const requests: RegionRequest[] = [
    { name: 'frames', pages: framePages * o.framePool },
    { name: 'display', pages: displayPages * o.displayBuffers },
    { name: 'stream-cache', pages: Math.min(pagesFor(streamBytesPerSec * 600, ps), Math.max(1, Math.floor(g.pageCount / 4))) },
    { name: 'demux', pages: pagesFor(o.demuxRingKiB * 1024, ps) },
    ...audioRegions(g.pageCount, ps, audio),
    { name: 'heap', pages: pagesFor(16 * 1024 * 1024, ps) },
  ];
  const layout = guestLayout(g.pageCount, ps, p.seed, requests, o.nonZeroFraction);
  const frameMs = 1000 / o.fps;
  const phase = hashUnit(p.seed, 30, 0) * frameMs;
  const cache = layout.region('stream-cache');
  const readAhead = o.readAheadKiB * 1024;
  const sources: WriteSource[] = [
    periodicBuffers({ region: layout.region('frames'), periodMs: frameMs, phaseMs: phase, bufferPages: framePages, poolSize: o.framePool, writeMs: o.decodeMs }),
    periodicBuffers({ region: layout.region('display'), periodMs: frameMs, phaseMs: phase + o.decodeMs, bufferPages: displayPages, poolSize: o.displayBuffers, writeMs: o.convertMs }),
    streamRing({ region: cache, pageSize: ps, ringBytes: cache.pages * ps, bytesPerSec: streamBytesPerSec, chunkBytes: readAhead, phaseMs: hashUnit(p.seed, 30, 1) * ((readAhead / streamBytesPerSec) * 1000) }),
    streamRing({ region: layout.region('demux'), pageSize: ps, ringBytes: o.demuxRingKiB * 1024, bytesPerSec: streamBytesPerSec, chunkBytes: DEMUX_READ_BYTES, phaseMs: hashUnit(p.seed, 30, 2) * ((DEMUX_READ_BYTES / streamBytesPerSec) * 1000) }),
    ...audioPatterns(p.seed, 10, layout, ps, audio),
    poissonPages({ seed: p.seed, stream: 31, region: layout.region('heap'), ratePerSec: o.heapChurnPerSec, pagesPerEvent: 1 }),
    osBackground({ seed: p.seed, stream: 1, kernel: layout.region('kernel'), ...o }),
  ];
  const desc = `movie playback: ${o.width}×${o.height} YUV 4:2:0 frames at ${o.fps} fps into a pool of ${o.framePool}, RGBA display ×${o.displayBuffers}, ${o.bitrateKbps} kbit/s stream read ahead, 44.1 kHz stereo soundtrack`;
  return new ComposedWorkload('movie', g, layout.nonZero, sources, desc);
}
