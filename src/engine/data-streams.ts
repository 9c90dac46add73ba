import { ErrorCodes, PresyncError, toPresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import type { TargetPages } from '../guest/segmented-target.ts';
import type { Frame } from '../wire/frames.ts';
import { decodePageBatch } from '../wire/pages.ts';
import type { FrameChannel } from './frame-channel.ts';

/**
 * Multi-stream sync, target side. A session's control connection registers
 * here once its image is open; extra connections that authenticated with the
 * JOIN capability and the same session id (and image identity) attach to it
 * and carry PAGES frames only, each acknowledged on its own connection. The
 * source sends every version of a page on the same stream, so per-page order
 * holds. When the session ends, its streams are cut and never write again.
 */
export interface JoinableSession {
  readonly imageId: string;
  /** The source's lineage: a stream of another lineage never joins. */
  readonly lineageId: string;
  readonly geometry: Geometry;
  readonly image: TargetPages;
  /** Called after pages were written through a data stream (a verify must be redone). */
  onPagesWritten(): void;
}

interface Entry {
  readonly session: JoinableSession;
  readonly streams: Set<FrameChannel>;
  closed: boolean;
}

export class SessionRegistry {
  private readonly sessions = new Map<string, Entry>();
  /** Joins that arrived while their session was still opening its image. */
  private readonly waiting = new Map<string, Array<() => void>>();

  private async find(sessionId: string, waitMs: number): Promise<Entry | undefined> {
    const now = this.sessions.get(sessionId);
    if (now || waitMs <= 0) return now;
    await new Promise<void>((resolve) => {
      const list = this.waiting.get(sessionId) ?? [];
      const timer = setTimeout(() => {
        // Never registered: forget this waiter so refused joins leave nothing behind.
        const k = list.indexOf(done);
        if (k >= 0) list.splice(k, 1);
        if (list.length === 0 && this.waiting.get(sessionId) === list) this.waiting.delete(sessionId);
        resolve();
      }, waitMs);
      list.push(done);
      this.waiting.set(sessionId, list);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
    });
    return this.sessions.get(sessionId);
  }

  /** Registers a session; the returned function ends it and cuts its data streams. */
  register(sessionId: string, session: JoinableSession): () => void {
    const entry: Entry = { session, streams: new Set(), closed: false };
    this.sessions.set(sessionId, entry);
    const ws = this.waiting.get(sessionId);
    this.waiting.delete(sessionId);
    for (const w of ws ?? []) w();
    return () => {
      entry.closed = true;
      if (this.sessions.get(sessionId) === entry) this.sessions.delete(sessionId);
      for (const ch of entry.streams) ch.destroy();
      entry.streams.clear();
    };
  }

  /**
   * Serves one joined data stream until it or its session ends. Refuses a
   * join for an unknown session or another image with a clear error.
   */
  async serveJoin(ch: FrameChannel, sessionId: string, imageId: string, idleMs: number, waitMs = 30_000, lineageId = ''): Promise<void> {
    // The control connection's welcome goes out before its image is open (a
    // rescan of a large image takes a while): a join may come first, and waits.
    const entry = await this.find(sessionId, waitMs);
    if (!entry || entry.closed) throw new PresyncError(ErrorCodes.BAD_PHASE, `no migration session ${sessionId} to join; open the control connection first`);
    if (entry.session.imageId !== imageId) throw new PresyncError(ErrorCodes.PROTOCOL, `stream joins session ${sessionId} for image "${imageId}", the session moves "${entry.session.imageId}"`);
    if (entry.session.lineageId !== lineageId) throw new PresyncError(ErrorCodes.PROTOCOL, `stream joins session ${sessionId} from another migration lineage`);
    const { geometry, image } = entry.session;
    ch.setGeometry(geometry);
    entry.streams.add(ch);
    let unacked = -1;
    try {
      for (;;) {
        if (unacked >= 0 && ch.queued === 0) {
          await ch.send({ type: 'ack', seq: unacked });
          unacked = -1;
        }
        const f: Frame = await ch.recv(idleMs);
        // The session may have ended while we waited: its image is closed then.
        if (entry.closed) return;
        if (f.type === 'pages') {
          const pages = decodePageBatch(f, geometry);
          image.writePages(pages);
          if (pages.length > 0) entry.session.onPagesWritten();
          unacked = f.seq;
        } else if (f.type === 'ping') {
          await ch.send({ type: 'pong', nonce: f.nonce });
        } else {
          throw new PresyncError(ErrorCodes.PROTOCOL, `a data stream carries only PAGES and PING, got ${f.type}`);
        }
      }
    } catch (e) {
      if (entry.closed) return;
      throw toPresyncError(e, ErrorCodes.CONNECTION);
    } finally {
      entry.streams.delete(ch);
    }
  }
}
