import { channel } from 'node:diagnostics_channel';
import { mkdirSync } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { initDigest } from '../native/page-digest.ts';
import type { Listener, Transport, TransportAddress } from '../transport/types.ts';
import { imagePathInDir } from './image-dir.ts';
import { layoutProblem, type SegmentFile } from '../core/image-layout.ts';
import { checkSecretStrength } from '../wire/handshake.ts';
import { runTargetSession, type HandoverHook, type TargetEvent } from './target-session.ts';
import { SessionRegistry } from './data-streams.ts';

export interface TargetAgentOptions {
  readonly transport: Transport;
  readonly listen: TransportAddress;
  /** One image for every migration; exactly one of imagePath (or segments) and imageDir. */
  readonly imagePath?: string;
  /**
   * One image of several files for every migration (e.g. the target QEMU's
   * memory backends, by id): the source must send the same ids. Instead of
   * imagePath (which, if given too, must be the first file).
   */
  readonly segments?: readonly SegmentFile[];
  /** One image per identity, `imageDir/<imageId>.img`; migrations of different images run side by side. */
  readonly imageDir?: string;
  readonly secret: Uint8Array;
  readonly force?: boolean;
  readonly hook?: HandoverHook;
  readonly handshakeTimeoutMs?: number;
  readonly idleTimeoutMs?: number;
  readonly onEvent?: (e: TargetEvent) => void;
  /** Connections that have not authenticated yet, at most; more are closed at once. Default 16. */
  readonly maxUnauthenticated?: number;
}

/** Default cap on connections still in their handshake. */
export const DEFAULT_MAX_UNAUTHENTICATED = 16;

const events = channel('presync:target:event');

/**
 * The target agent: accepts migrations one after another into one image.
 * A second source for the same image identity takes over from a stale
 * session (its connection may be half-dead after a network cut); a source
 * for another identity is refused with PRESYNC_ERR_BUSY while one is active.
 * With imageDir, each identity has its own image and the BUSY rule applies
 * per identity only. No peer's failure stops the agent.
 */
export class TargetAgent {
  private readonly active = new Map<string, { imageId: string; abort: () => void; done: Promise<void> }>();
  private readonly sessions = new Set<Promise<unknown>>();
  private readonly joinable = new SessionRegistry();
  /** Connections that have not authenticated yet. */
  private pending = 0;

  private constructor(private readonly o: TargetAgentOptions, private listener: Listener | undefined) {}

  static async start(o: TargetAgentOptions): Promise<TargetAgent> {
    const imagePath = o.imagePath ?? o.segments?.[0]?.path;
    if ((imagePath === undefined) === (o.imageDir === undefined)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'a target agent needs exactly one of imagePath (or segments) and imageDir');
    }
    if (o.segments !== undefined) {
      const why = layoutProblem(o.segments.map((s) => ({ id: s.id, pageCount: 1 })));
      if (why) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `target segments: ${why}`);
      if (imagePath !== o.segments[0].path) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `the image path ${imagePath} must be the first segment's (${o.segments[0].path})`);
    }
    checkSecretStrength(o.secret);
    const dir = o.imageDir;
    if (dir !== undefined) mkdirSync(dir, { recursive: true });
    await initDigest();
    const agent = new TargetAgent(o, undefined);
    const maxPending = o.maxUnauthenticated ?? DEFAULT_MAX_UNAUTHENTICATED;
    agent.listener = await o.transport.listen(o.listen, (conn) => {
      // A flood of peers that never authenticate must not crowd out a real
      // source or pin memory: past the cap, new connections are dropped.
      if (agent.pending >= maxPending) {
        conn.destroy();
        return;
      }
      agent.pending++;
      let authenticated = false;
      const settle = (): void => {
        if (authenticated) return;
        authenticated = true;
        agent.pending--;
      };
      const s = runTargetSession(conn, {
        onAuthenticated: settle,
        imagePath: dir !== undefined ? (id: string) => imagePathInDir(dir, id) : imagePath!,
        ...(o.segments !== undefined ? { segments: o.segments } : {}),
        secret: o.secret,
        ...(o.force !== undefined ? { force: o.force } : {}),
        ...(o.hook ? { hook: o.hook } : {}),
        ...(o.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: o.handshakeTimeoutMs } : {}),
        ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
        onEvent: (e) => {
          if (events.hasSubscribers) events.publish(e);
          o.onEvent?.(e);
        },
        claim: (imageId, abort) => agent.claim(imageId, abort),
        sessions: agent.joinable,
      })
        .catch(() => undefined)
        .finally(settle);
      agent.sessions.add(s);
      void s.finally(() => agent.sessions.delete(s));
    });
    return agent;
  }

  get address(): TransportAddress {
    if (!this.listener) throw new PresyncError(ErrorCodes.INTERNAL, 'target agent not listening');
    return this.listener.address;
  }

  private async claim(imageId: string, abort: () => void): Promise<() => void> {
    // One image: any other identity waits. Image directory: only the same identity competes.
    const key = this.o.imageDir === undefined ? '' : imageId;
    const prev = this.active.get(key);
    if (prev) {
      if (prev.imageId !== imageId) {
        throw new PresyncError(ErrorCodes.BUSY, `the target is busy with a migration of image "${prev.imageId}"; try again when it ends`);
      }
      prev.abort();
      await prev.done;
      if (this.active.has(key)) throw new PresyncError(ErrorCodes.BUSY, 'another source claimed this image at the same moment');
    }
    let release!: () => void;
    const done = new Promise<void>((r) => (release = r));
    const mine = { imageId, abort, done };
    this.active.set(key, mine);
    return () => {
      if (this.active.get(key) === mine) this.active.delete(key);
      release();
    };
  }

  async close(): Promise<void> {
    for (const a of this.active.values()) a.abort();
    await this.listener?.close({ destroyConnections: true });
    await Promise.allSettled([...this.sessions]);
  }
}
