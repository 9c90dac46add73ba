import type { PageSet } from '../../core/pageset.ts';
import type { Workload, WorkloadParams } from '../workload.ts';
import { ComposedWorkload } from './composed.ts';
import { addWrapped, guestLayout, pageAt, pagesFor, type Region, type RegionRequest } from './layout.ts';
import { checkParams, resolveOptions, type OptionSpecs } from './options.ts';
import { OS_OPTIONS, osBackground, periodicBuffers, poissonPages, streamRing, type WriteSource } from './patterns.ts';
import { forEachPoissonEvent, forEachTick, hashUnit, keyInt, slotFor } from './time.ts';

export const TEXT_EDITING_OPTIONS = {
  ...OS_OPTIONS,
  keystrokesPerSec: { default: 4, min: 0, max: 1000, doc: 'keystrokes per second (Poisson); 40 wpm ≈ 3.3 chars/s' },
  documentKiB: { default: 2048, min: 4, max: 1048576, doc: 'in-memory document (text, styles, piece table), KiB' },
  cursorDwellSec: { default: 30, min: 0.1, max: 86400, doc: 'seconds the user edits at one place before moving elsewhere' },
  autosaveSec: { default: 8, min: 0, max: 86400, doc: 'autosave period, s (0: never)' },
  serialiseMBps: { default: 20, min: 0.1, max: 100000, doc: 'serialisation speed of an autosave, MB/s (sets the burst length)' },
  scrollsPerSec: { default: 0.1, min: 0, max: 100, doc: 'scroll/page jumps per second, each redrawing the whole window' },
  allocKiBPerSec: { default: 100, min: 0, max: 1048576, doc: 'allocation rate into the young-generation nursery, KiB/s' },
  heapChurnPerSec: { default: 20, min: 0, max: 1e6, doc: 'random heap page writes per second (malloc/free, GC marking)' },
  nonZeroFraction: { default: 0.55, min: 0, max: 1, doc: 'fraction of the guest non-zero at start' },
} as const satisfies OptionSpecs;

/** The editor's window back buffer: 1280 × 720 RGBA, 20-pixel text lines. */
const WINDOW_W = 1280;
const WINDOW_H = 720;
const LINE_PX = 20;
const LINES = WINDOW_H / LINE_PX;
/** A new line every 15 s of typing (≈ 60 characters at 4/s). */
const LINE_MS = 15_000;
/** Undo record per keystroke: action, position, text, timestamp. */
const UNDO_RECORD_BYTES = 64;
const CARET_BLINK_MS = 500;

/**
 * `text-editing`: a word processor (gedit/LibreOffice-like) with a 2 MiB
 * document, a user typing at 4 keystrokes/s.
 *
 * Writes, with the defaults:
 * - the cursor stays in one place for 30 s, then the user clicks elsewhere
 *   (a seeded uniform place in the document); each keystroke (Poisson,
 *   4/s) writes the document page under the cursor (gap buffer), 2 pages of
 *   the layout cache for that paragraph, 1 of 4 input-queue pages, and
 *   appends a 64 B record to the undo log (256 B/s: a new page every 16 s);
 * - each keystroke and each caret blink (2 Hz) redraws the cursor's text line
 *   in the 1280 × 720 RGBA window buffer: 20 rows × 5120 B = 25 pages; a
 *   scroll (0.1/s) redraws the whole window, 900 pages;
 * - autosave every 8 s serialises the 2 MiB document (512 pages) into a save
 *   buffer at 20 MB/s (a 105 ms burst), then writes it to the file's page
 *   cache (saved as a new file and renamed, so two alternating sets of 512
 *   pages): 1024 pages per save, 128 pages/s on average;
 * - the runtime allocates 100 KiB/s into a 4 MiB nursery (25 pages/s,
 *   sequential, wrapping every 41 s) and churns 20 random pages/s of an 8 MiB
 *   heap;
 * - the idle OS background (≈ 11 pages/s).
 *
 * Dirty rate with defaults, 256 MiB guest: ≈ 6 (keystrokes) + 25 (line) + 90
 * (scrolls) + 128 (autosave) + 25 + 20 + 11 ≈ 300 distinct pages/s (≈ 1.2 MB/s),
 * documented range 200–400 pages/s (measured over 1 s windows). Bursty:
 * seconds with an autosave or a scroll see ~1 000 pages, the others ~90.
 *
 * Non-zero at start: 55 % of the guest: kernel (32 MiB), the editor's regions
 * (≈ 25 MiB) and three filler regions (libraries, other processes, page cache).
 */
export function createTextEditing(p: WorkloadParams): Workload {
  const g = checkParams('text-editing', p);
  const o = resolveOptions('text-editing', TEXT_EDITING_OPTIONS, p.options);
  const ps = g.pageSize;
  const docBytes = o.documentKiB * 1024;
  const docPages = pagesFor(docBytes, ps);
  const requests: RegionRequest[] = [
    { name: 'document', pages: docPages },
    { name: 'layout-cache', pages: pagesFor(1024 * 1024, ps) },
    { name: 'undo-log', pages: pagesFor(1024 * 1024, ps) },
    { name: 'save-buffer', pages: docPages },
    { name: 'file-cache', pages: 2 * docPages },
    { name: 'nursery', pages: pagesFor(4 * 1024 * 1024, ps) },
    { name: 'heap', pages: pagesFor(8 * 1024 * 1024, ps) },
    { name: 'window', pages: pagesFor(WINDOW_W * WINDOW_H * 4, ps) },
    { name: 'input', pages: 4 },
  ];
  const layout = guestLayout(g.pageCount, ps, p.seed, requests, o.nonZeroFraction);
  const doc = layout.region('document');
  const layoutCache = layout.region('layout-cache');
  const undo = layout.region('undo-log');
  const input = layout.region('input');
  const win = layout.region('window');
  const dwellMs = o.cursorDwellSec * 1000;
  const undoBytesPerMs = (o.keystrokesPerSec * UNDO_RECORD_BYTES) / 1000;

  // Where the cursor is at time t: fixed within a dwell, seeded per dwell.
  const cursorAt = (t: number): number => hashUnit(p.seed, 41, Math.floor(t / dwellMs));
  const redrawLine = (t: number, into: PageSet): void => {
    const d = Math.floor(t / dwellMs);
    const line = (Math.floor(hashUnit(p.seed, 42, d) * LINES) + Math.floor((t - d * dwellMs) / LINE_MS)) % LINES;
    const lineBytes = LINE_PX * WINDOW_W * 4;
    const first = Math.floor((line * lineBytes) / ps);
    const last = Math.floor(((line + 1) * lineBytes - 1) / ps);
    addWrapped(into, win, first, last - first + 1);
  };
  const keystrokes = { seed: p.seed, stream: 40, ratePerSec: o.keystrokesPerSec, slotMs: slotFor(o.keystrokesPerSec) };
  const typing: WriteSource = (fromMs, toMs, into) => {
    forEachPoissonEvent(keystrokes, fromMs, toMs, (t, key) => {
      const u = cursorAt(t);
      into.add(pageAt(doc, u * doc.pages));
      addWrapped(into, layoutCache, Math.floor(u * layoutCache.pages), 2);
      into.add(pageAt(undo, Math.floor((t * undoBytesPerMs) / ps)));
      into.add(pageAt(input, keyInt(key, 0, input.pages)));
      redrawLine(t, into);
    });
  };
  const caret: WriteSource = (fromMs, toMs, into) => {
    forEachTick(CARET_BLINK_MS, hashUnit(p.seed, 44, 0) * CARET_BLINK_MS, fromMs, toMs, (_k, t) => redrawLine(t, into));
  };
  const scrolls = { seed: p.seed, stream: 43, ratePerSec: o.scrollsPerSec, slotMs: slotFor(o.scrollsPerSec) };
  const scrolling: WriteSource = (fromMs, toMs, into) => {
    forEachPoissonEvent(scrolls, fromMs, toMs, () => addWrapped(into, win, 0, win.pages));
  };

  const saveMs = o.autosaveSec * 1000;
  const serialiseMs = docBytes / (o.serialiseMBps * 1000);
  const savePhase = hashUnit(p.seed, 45, 0) * saveMs;
  const saveBuffer: Region = layout.region('save-buffer');
  const fileCache: Region = layout.region('file-cache');
  const savePages = Math.min(docPages, saveBuffer.pages);
  const sources: WriteSource[] = [
    typing,
    caret,
    scrolling,
    periodicBuffers({ region: saveBuffer, periodMs: saveMs, phaseMs: savePhase, bufferPages: savePages, poolSize: 1, writeMs: serialiseMs }),
    periodicBuffers({ region: fileCache, periodMs: saveMs, phaseMs: savePhase + serialiseMs, bufferPages: Math.max(1, Math.floor(fileCache.pages / 2)), poolSize: 2, writeMs: serialiseMs }),
    streamRing({ region: layout.region('nursery'), pageSize: ps, ringBytes: 4 * 1024 * 1024, bytesPerSec: o.allocKiBPerSec * 1024, chunkBytes: ps, phaseMs: 0 }),
    poissonPages({ seed: p.seed, stream: 46, region: layout.region('heap'), ratePerSec: o.heapChurnPerSec, pagesPerEvent: 1 }),
    osBackground({ seed: p.seed, stream: 1, kernel: layout.region('kernel'), ...o }),
  ];
  const desc = `text editing: ${o.keystrokesPerSec} keystrokes/s in a ${o.documentKiB} KiB document (cursor moves every ${o.cursorDwellSec} s), autosave every ${o.autosaveSec} s, ${o.scrollsPerSec} scrolls/s, ${o.allocKiBPerSec} KiB/s allocation`;
  return new ComposedWorkload('text-editing', g, layout.nonZero, sources, desc);
}
