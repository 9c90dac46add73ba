import { existsSync, readFileSync } from 'node:fs';
import { ErrorCodes, PresyncError, toPresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import { TargetImage, metaPath, type ImageMeta } from '../guest/target-image.ts';
import { matchLayout, type SegmentFile, type SegmentSpec } from '../core/image-layout.ts';
import { heldLayoutMeta, SegmentedTargetImage, type TargetPages } from '../guest/segmented-target.ts';
import type { Connection } from '../transport/types.ts';
import { DigestRunCollector, diffDigests, digestRunFrames, summaryMatches, verifyResponse } from '../wire/digest-runs.ts';
import type { Frame } from '../wire/frames.ts';
import { ServerHandshake, type HandshakeResult } from '../wire/handshake.ts';
import { Capability, DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES } from '../wire/constants.ts';
import { decodePageBatch } from '../wire/pages.ts';
import { FrameChannel } from './frame-channel.ts';
import type { SessionRegistry } from './data-streams.ts';

/** What the target does at handover; the default starts nothing (an image at rest). */
export interface HandoverHook {
  /** Called once the image is verified. Resolves once the guest runs on the target. */
  start(ctx: { imagePath: string; geometry: Geometry; deviceState: Uint8Array; sessionId: string }): Promise<void>;
}

export type TargetEvent =
  | { event: 'session-start'; remote: string; sessionId: string; imageId: string; resume: boolean }
  | { event: 'phase'; sessionId: string; phase: string }
  | { event: 'verify'; sessionId: string; match: boolean; mismatches: number }
  /** The file held other bytes than were written to these pages (another writer): reported to the source for a resend. */
  | { event: 'repair'; sessionId: string; pages: number; during: 'presync' | 'verify' }
  | { event: 'session-end'; sessionId: string; outcome: 'handed-over' | 'aborted' | 'failed'; error: { code: string; message: string } | null; pagesWritten: number };

export interface TargetSessionOptions {
  /** The image file, or how to find it from the identity in the HELLO (multi-image agents). */
  readonly imagePath: string | ((imageId: string) => string);
  /**
   * The image's files when it is several (e.g. the target QEMU's memory
   * backends): the source must send a layout of exactly these ids (and
   * sizes, when given); each segment is written into the file of its id.
   * Two or more; imagePath is then the first one's path.
   */
  readonly segments?: readonly SegmentFile[];
  readonly secret: Uint8Array;
  readonly force?: boolean;
  readonly handshakeTimeoutMs?: number;
  /** Close a session whose peer sends nothing for this long. */
  readonly idleTimeoutMs?: number;
  readonly hook?: HandoverHook;
  readonly onEvent?: (e: TargetEvent) => void;
  /**
   * Called after authentication, before the image is touched: resolves to a
   * release function once this session may own the image, or throws (BUSY).
   */
  readonly claim?: (imageId: string, abortOther: () => void) => Promise<() => void>;
  /** Largest device state accepted, bytes. */
  readonly maxDeviceStateBytes?: number;
  /** Where sessions register so that data streams (multi-stream sync) can join them; without it joins are refused. */
  readonly sessions?: SessionRegistry;
  /** Called once the peer has authenticated (the agent caps connections that have not). */
  readonly onAuthenticated?: () => void;
  /** Background re-verification during presync: pages re-read per slice (default 1/128 of the image, at least 256) and ms between slices (default 20; 0 turns it off). */
  readonly reverify?: { readonly slicePages?: number; readonly intervalMs?: number };
}

/**
 * Re-reads the image in slices while the guest runs on the source, so that
 * damage by another writer is found and resent long before the pause; the
 * verify re-reads the whole file anyway (recheckAll), this only keeps the
 * repair out of the pause.
 */
function startReverify(image: TargetPages, o: TargetSessionOptions, active: () => boolean, report: (pages: number[]) => void): () => void {
  const interval = o.reverify?.intervalMs ?? 20;
  // A pass over the image every ~128 slices (~2.6 s), whatever its size: the
  // pass also keeps the mapping the verify reads faulted in.
  const slice = Math.max(1, Math.floor(o.reverify?.slicePages ?? Math.max(256, Math.ceil(image.geometry.pageCount / 128))));
  if (interval <= 0) return () => undefined;
  let cursor = 0;
  const timer = setInterval(() => {
    if (!active()) return;
    try {
      const bad = image.recheck(cursor, slice);
      cursor = cursor + slice >= image.geometry.pageCount ? 0 : cursor + slice;
      if (bad.length > 0) report(bad);
    } catch {
      // A file that cannot be re-read fails the verify, which re-reads it all.
    }
  }, interval);
  timer.unref();
  return () => clearInterval(timer);
}

/** HAVE frames for a sorted list of pages: one run per stretch of consecutive pages. */
function repairFrames(pages: readonly number[], digests: BigUint64Array): Frame[] {
  const out: Frame[] = [];
  let i = 0;
  while (i < pages.length) {
    let j = i + 1;
    while (j < pages.length && pages[j] === pages[j - 1] + 1 && j - i < 65536) j++;
    out.push({ type: 'have', first: pages[i], digests: digests.slice(pages[i], pages[j - 1] + 1), final: true });
    i = j;
  }
  return out;
}

function heldMeta(path: string): ImageMeta | null {
  if (!existsSync(metaPath(path)) || !existsSync(path)) return null;
  try {
    const m = JSON.parse(readFileSync(metaPath(path), 'utf8')) as ImageMeta;
    return m.format === 'presync-image/1' ? m : null;
  } catch {
    return null;
  }
}

/**
 * One migration as the target sees it: authenticate, open (or resume) the
 * image, apply verified page batches, answer the verify request, and at
 * handover start the guest. Every failure ends with the image marked invalid
 * (unless it is a plain disconnect during presync, which a resume may mend)
 * and never escapes as an exception: the agent keeps serving.
 */
export async function runTargetSession(conn: Connection, o: TargetSessionOptions): Promise<TargetEvent & { event: 'session-end' }> {
  const ch = new FrameChannel(conn);
  // Until the peer authenticated, no frame may be bigger than a handshake frame.
  ch.setMaxFrameBytes(HANDSHAKE_MAX_FRAME_BYTES);
  const emit = o.onEvent ?? (() => undefined);
  const idle = o.idleTimeoutMs ?? 60_000;
  let image: TargetPages | undefined;
  let sessionId = '?';
  let phase = 'handshake';
  let release: (() => void) | undefined;
  let verified = false;
  let endStreams: (() => void) | undefined;
  let stopReverify: (() => void) | undefined;
  /** The hook confirmed that the application runs here. */
  let started = false;
  const end = (outcome: 'handed-over' | 'aborted' | 'failed', err: PresyncError | null) => {
    const e = { event: 'session-end' as const, sessionId, outcome, error: err ? { code: err.code, message: err.message } : null, pagesWritten: image?.pagesWritten ?? 0 };
    // A data stream's end is not a session's: only the control connection reports one.
    if (phase !== 'stream') emit(e);
    return e;
  };
  try {
    const { result, imagePath } = await acceptHandshake(ch, o);
    sessionId = result.sessionId;
    ch.setMaxFrameBytes(DEFAULT_MAX_FRAME_BYTES);
    o.onAuthenticated?.();
    if (result.join) {
      if (!o.sessions) throw new PresyncError(ErrorCodes.PROTOCOL, 'this target does not accept joining data streams');
      phase = 'stream';
      return await serveDataStream(ch, o.sessions, result, idle);
    }
    // A layout that does not fit this target's files is refused before any file is touched.
    const files = targetFiles(result, imagePath, o.segments);
    if (o.claim) release = await o.claim(result.imageId, () => ch.destroy());
    const openOpts = { force: o.force === true, zeroFill: !result.resume, ...(result.lineageId ? { lineageId: result.lineageId } : {}) };
    image = files ? SegmentedTargetImage.open(files, result.geometry.pageSize, result.imageId, openOpts) : TargetImage.open(imagePath, result.geometry, result.imageId, openOpts);
    const opened = image;
    endStreams = o.sessions?.register(sessionId, {
      imageId: result.imageId,
      lineageId: result.lineageId,
      geometry: result.geometry,
      image: opened,
      onPagesWritten: () => {
        verified = false;
      },
    });
    emit({ event: 'session-start', remote: conn.remote, sessionId, imageId: result.imageId, resume: result.resume });
    if (result.resume) for (const f of digestRunFrames('have', image.digests)) await ch.send(f);
    phase = 'presync';
    const reportRepairs = (result.capabilities & Capability.REVERIFY) !== 0;
    stopReverify = startReverify(
      opened,
      o,
      () => phase === 'presync' || phase === 'launched',
      (bad) => {
        verified = false;
        emit({ event: 'repair', sessionId, pages: bad.length, during: 'presync' });
        // Sent between the main loop's frames (one write per frame keeps them whole).
        if (reportRepairs) for (const f of repairFrames(bad, opened.digests)) void ch.send(f).catch(() => undefined);
      },
    );

    const verifier = new Verifier(ch, result.geometry.pageCount, sessionId, emit);
    const device = new DeviceStateBuffer(o.maxDeviceStateBytes ?? 64 * 1024 * 1024);
    let unacked = -1;
    for (;;) {
      // Acknowledgements are cumulative: one for the whole burst of frames
      // already read, once they are all applied, instead of a write per frame.
      if (unacked >= 0 && ch.queued === 0) {
        await ch.send({ type: 'ack', seq: unacked });
        unacked = -1;
      }
      const f: Frame = await ch.recv(idle);
      switch (f.type) {
        case 'pages': {
          // Every page of the batch is checked (range, size, digest) before any is written.
          const pages = decodePageBatch(f, result.geometry);
          image.writePages(pages);
          if (pages.length > 0) verified = false;
          unacked = f.seq;
          break;
        }
        case 'phase':
          phase = f.phase;
          emit({ event: 'phase', sessionId, phase });
          break;
        case 'verify-request':
        case 'verify-summary': {
          const answer = await verifier.answer(f, image);
          if (answer !== undefined) verified = answer;
          break;
        }
        case 'device-state':
          device.add(f);
          break;
        case 'handover': {
          checkHandover(phase, verified);
          const deviceState = device.complete();
          // Anything that fails up to here is answered with ERROR, and the
          // source rolls back: nothing runs on the target yet. A sidecar
          // that cannot say `valid` (disk full) is such a failure.
          image.markValid();
          await startApplication(o, { imagePath, geometry: result.geometry, deviceState, sessionId });
          // From here the guest may run on the target: no ERROR may claim otherwise.
          started = true;
          await ch.send({ type: 'handover-done' });
          await ch.close();
          return end('handed-over', null);
        }
        case 'abort':
          image.markInvalid();
          await ch.close();
          return end('aborted', new PresyncError(ErrorCodes.ABORTED, f.reason || 'source aborted the migration'));
        case 'ping':
          await ch.send({ type: 'pong', nonce: f.nonce });
          break;
        case 'pong':
          break;
        default:
          throw new PresyncError(ErrorCodes.PROTOCOL, `unexpected ${f.type} frame from the source`);
      }
    }
  } catch (e) {
    const err = toPresyncError(e);
    if (started) {
      // The application runs on this image: it stays valid, and the source
      // (which may not hear HANDOVER_DONE) must not be told it failed.
      ch.destroy();
      return end('handed-over', null);
    }
    // A disconnect during presync keeps the partial image for a resume; any
    // failure after launch invalidates it: that guest must not start here.
    if (image && (phase !== 'presync' || err.code !== ErrorCodes.CONNECTION)) image.markInvalid();
    // An authenticated source may have frames in flight: close gracefully so
    // that it reads the reason (e.g. PRESYNC_ERR_IMAGE_EXISTS, not retried)
    // rather than a reset. An unauthenticated peer is cut at once.
    if (err.code !== ErrorCodes.CONNECTION && err.code !== ErrorCodes.TIMEOUT) await ch.abortWith(err, { lingerMs: sessionId !== '?' ? 1000 : 0 });
    else ch.destroy();
    return end('failed', err);
  } finally {
    stopReverify?.();
    // Data streams stop before the image closes: none may write after this session.
    endStreams?.();
    image?.close();
    release?.();
  }
}

/**
 * The target's files in the source's page order when the source's image is
 * several files (undefined for one file, written at imagePath). A source of
 * several files to a one-file target, or the reverse, or other ids or sizes:
 * PRESYNC_ERR_GEOMETRY saying what differs.
 */
function targetFiles(result: HandshakeResult, imagePath: string, segments: readonly SegmentFile[] | undefined): Array<SegmentFile & SegmentSpec> | undefined {
  const mine = segments !== undefined && segments.length >= 2 ? segments : undefined;
  const theirs = result.segments;
  if (theirs === undefined && mine === undefined) return undefined;
  if (theirs === undefined) {
    throw new PresyncError(
      ErrorCodes.GEOMETRY,
      `the source's RAM is one file, this target has ${mine!.length} (${mine!.map((s) => s.id).join(', ')}); give both the same RAM backends`,
    );
  }
  if (mine === undefined) {
    throw new PresyncError(
      ErrorCodes.GEOMETRY,
      `the source's RAM is ${theirs.length} files (${theirs.map((s) => s.id).join(', ')}), this target has one (${imagePath}); give the target one RAM file per source segment with the same ids`,
    );
  }
  return matchLayout(theirs, result.geometry.pageSize, mine);
}

/** A data stream of a session that is already running: it owns nothing, and its end is not a session's. */
async function serveDataStream(ch: FrameChannel, sessions: NonNullable<TargetSessionOptions['sessions']>, result: HandshakeResult, idleMs: number): Promise<TargetEvent & { event: 'session-end' }> {
  await sessions.serveJoin(ch, result.sessionId, result.imageId, idleMs, undefined, result.lineageId);
  ch.destroy();
  return { event: 'session-end', sessionId: result.sessionId, outcome: 'aborted', error: null, pagesWritten: 0 };
}

/** HANDOVER is legal only in the handover phase, after a verify that matched the image as it is now. */
function checkHandover(phase: string, verified: boolean): void {
  if (phase !== 'handover') throw new PresyncError(ErrorCodes.PROTOCOL, `HANDOVER in phase ${phase}; the source must verify first`);
  if (!verified) throw new PresyncError(ErrorCodes.VERIFY, 'HANDOVER without a matching verify of the current image');
}

/** Runs the handover hook; its failure says the application did not start, a definite failure reported as such. */
async function startApplication(o: TargetSessionOptions, at: Parameters<NonNullable<TargetSessionOptions['hook']>['start']>[0]): Promise<void> {
  try {
    await (o.hook?.start(at) ?? Promise.resolve());
  } catch (e) {
    throw toPresyncError(e, ErrorCodes.HANDOVER_HOOK);
  }
}

/**
 * The server side of the handshake, under one deadline for the whole of it
 * (not one per frame: a peer trickling bytes cannot hold an unauthenticated
 * connection longer). The image, and so the geometry the CHALLENGE
 * announces, may depend on the identity in the HELLO.
 */
async function acceptHandshake(ch: FrameChannel, o: TargetSessionOptions): Promise<{ result: HandshakeResult; imagePath: string }> {
  const handshakeEnds = Date.now() + (o.handshakeTimeoutMs ?? 10_000);
  const left = (): number => Math.max(1, handshakeEnds - Date.now());
  let first: Frame | undefined;
  let imagePath: string;
  if (typeof o.imagePath === 'string') imagePath = o.imagePath;
  else {
    first = await ch.recv(left());
    if (first.type !== 'hello') throw new PresyncError(ErrorCodes.PROTOCOL, `unexpected ${first.type} frame while the server handshake is await-hello`);
    imagePath = o.imagePath(first.imageId);
  }
  const held = o.segments !== undefined && o.segments.length >= 2 ? heldLayoutMeta(o.segments) : heldMeta(imagePath);
  const hs = new ServerHandshake({
    secret: o.secret,
    ...(held
      ? {
          geometry: { pageSize: held.pageSize, pageCount: held.pageCount },
          heldImageId: held.imageId,
          // --force may reuse a handed-over image: then only the lineage decides a resume.
          ...(o.force ? {} : { heldState: held.state }),
          ...(held.lineageId !== undefined ? { heldLineageId: held.lineageId } : {}),
        }
      : {}),
  });
  const result = await ch.handshake(hs, { timeoutMs: left(), ...(first ? { first } : {}) });
  return { result, imagePath };
}

/** DEVICE_STATE chunks, in order and within a size limit, until the handover takes them whole. */
class DeviceStateBuffer {
  private readonly parts: Uint8Array[] = [];
  private len = 0;
  private total = -1;

  constructor(private readonly max: number) {}

  add(f: Extract<Frame, { type: 'device-state' }>): void {
    if (f.totalLength > this.max) throw new PresyncError(ErrorCodes.PROTOCOL, `device state of ${f.totalLength} B exceeds the ${this.max} B limit`);
    if (this.total < 0) this.total = f.totalLength;
    if (f.totalLength !== this.total || f.offset !== this.len) throw new PresyncError(ErrorCodes.PROTOCOL, 'device state chunks out of order');
    this.parts.push(f.data.slice());
    this.len += f.data.length;
  }

  /** The whole device state (empty if none came); throws if some of it is missing. */
  complete(): Uint8Array {
    if (this.total >= 0 && this.len !== this.total) throw new PresyncError(ErrorCodes.PROTOCOL, 'device state incomplete at handover');
    return concat(this.parts, this.len);
  }
}

/** Answers VERIFY_SUMMARY and VERIFY_REQUEST from the image's file, re-read whole (in parallel) each time. */
class Verifier {
  private run: DigestRunCollector | undefined;

  constructor(
    private readonly ch: FrameChannel,
    private readonly pageCount: number,
    private readonly sessionId: string,
    private readonly emit: (e: TargetEvent) => void,
  ) {}

  /** Whether the image matched, once a request is complete (undefined while its runs are still coming). */
  async answer(f: Extract<Frame, { type: 'verify-request' | 'verify-summary' }>, image: TargetPages): Promise<boolean | undefined> {
    const { ch, sessionId } = this;
    if (f.type === 'verify-summary') {
      await this.recheck(image);
      const match = summaryMatches(f, image.digests);
      // A mismatch is reported as the full VERIFY_REQUEST that follows finds it.
      if (match) this.emit({ event: 'verify', sessionId, match, mismatches: 0 });
      await ch.send({ type: 'verify-summary-response', match });
      return match;
    }
    this.run ??= new DigestRunCollector(this.pageCount);
    const table = this.run.add(f);
    if (!table) return undefined;
    await this.recheck(image);
    const mism = diffDigests(image.digests, table);
    this.emit({ event: 'verify', sessionId, match: mism.length === 0, mismatches: mism.length });
    await ch.send(verifyResponse(mism));
    this.run = undefined;
    return mism.length === 0;
  }

  private async recheck(image: TargetPages): Promise<void> {
    const bad = await image.recheckAll();
    if (bad.length > 0) this.emit({ event: 'repair', sessionId: this.sessionId, pages: bad.length, during: 'verify' });
  }
}

function concat(parts: Uint8Array[], len: number): Uint8Array {
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

