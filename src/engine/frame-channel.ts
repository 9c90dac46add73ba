import { ErrorCodes, PresyncError, toPresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import type { Connection } from '../transport/types.ts';
import { FrameDecoder } from '../wire/decoder.ts';
import type { Frame } from '../wire/frames.ts';
import { encodeFrameParts } from '../wire/framing.ts';
import { errorFrame, errorFromFrame, type HandshakeResult, type HandshakeStep } from '../wire/handshake.ts';

/** Either end's handshake state machine (wire/handshake.ts): frames in, frames to send and finally a result out. */
export interface HandshakeMachine {
  receive(frame: Frame): HandshakeStep;
}

/**
 * Frames over a transport connection. Reading is pull-based (recv() reads the
 * socket only when the queue is empty), so a slow consumer slows the peer down
 * through the transport's backpressure instead of buffering frames.
 * A peer's ERROR frame surfaces as a PresyncError with the peer's code.
 */
export class FrameChannel {
  private readonly decoder: FrameDecoder;
  private readonly queue: Frame[] = [];
  private failure: PresyncError | undefined;
  private ended = false;
  bytesSent = 0;

  constructor(readonly conn: Connection, opts: { maxFrameBytes?: number; geometry?: Geometry } = {}) {
    this.decoder = new FrameDecoder(opts);
  }

  /** Frames already decoded and waiting for recv(). */
  get queued(): number {
    return this.queue.length;
  }

  /** The frame limit for frames still to come (small until the peer authenticated). */
  setMaxFrameBytes(max: number): void {
    this.decoder.setMaxFrameBytes(max);
  }

  setGeometry(g: Geometry): void {
    this.decoder.setGeometry(g);
  }

  /** Encodes and writes one frame; resolves when the transport accepted it under its high-water mark. Returns its size. */
  async send(frame: Frame): Promise<number> {
    if (this.failure) throw this.failure;
    const parts = encodeFrameParts(frame);
    // One write per frame: a PAGES frame is ~130 parts (a 24-byte record
    // header before each page), and each write() to an idle socket is its own
    // syscall. Copying 256 KiB once costs far less than 130 syscalls.
    const whole = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    const n = whole.length;
    try {
      await this.conn.write(whole);
    } catch (e) {
      throw this.fail(toPresyncError(e, ErrorCodes.CONNECTION));
    }
    this.bytesSent += n;
    return n;
  }

  /** Writes a frame already encoded whole (header and CRCs included). Returns its size. */
  async sendEncoded(frame: Buffer): Promise<number> {
    if (this.failure) throw this.failure;
    try {
      await this.conn.write(frame);
    } catch (e) {
      throw this.fail(toPresyncError(e, ErrorCodes.CONNECTION));
    }
    this.bytesSent += frame.length;
    return frame.length;
  }

  /** Next frame. Rejects on a broken connection, a bad frame, a peer's ERROR frame or the timeout. */
  async recv(timeoutMs?: number): Promise<Frame> {
    if (timeoutMs === undefined) return this.recvInner();
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.recvInner(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            const e = new PresyncError(ErrorCodes.TIMEOUT, `peer ${this.conn.remote} sent nothing for ${timeoutMs} ms`);
            this.fail(e);
            this.conn.destroy(e);
            reject(e);
          }, timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async recvInner(): Promise<Frame> {
    for (;;) {
      const f = this.queue.shift();
      if (f) {
        if (f.type === 'error') throw this.fail(errorFromFrame(f));
        return f;
      }
      if (this.failure) throw this.failure;
      if (this.ended) throw this.fail(new PresyncError(ErrorCodes.CONNECTION, `peer ${this.conn.remote} closed the connection`));
      let chunk: Uint8Array | null;
      try {
        chunk = await this.conn.read();
      } catch (e) {
        throw this.fail(toPresyncError(e, ErrorCodes.CONNECTION));
      }
      if (chunk === null) {
        this.ended = true;
        continue;
      }
      try {
        this.queue.push(...this.decoder.push(chunk));
      } catch (e) {
        throw this.fail(toPresyncError(e, ErrorCodes.PROTOCOL));
      }
    }
  }

  /**
   * Runs a handshake to its end: sends `opening` (the client's HELLO), then
   * feeds the machine every frame that arrives (`first` if one was already
   * read) and sends what it answers. Each frame must come within `timeoutMs`.
   * Once done, frames are decoded against the agreed geometry.
   */
  async handshake(machine: HandshakeMachine, o: { readonly timeoutMs: number; readonly opening?: HandshakeStep; readonly first?: Frame }): Promise<HandshakeResult> {
    for (const f of o.opening?.send ?? []) await this.send(f);
    let first = o.first;
    // One deadline for the whole handshake, not one per frame: a peer
    // trickling bytes cannot stretch it.
    const ends = Date.now() + o.timeoutMs;
    for (;;) {
      const next = first ?? (await this.recv(Math.max(1, ends - Date.now())));
      first = undefined;
      const step = machine.receive(next);
      for (const f of step.send) await this.send(f);
      if (step.result) {
        this.setGeometry(step.result.geometry);
        return step.result;
      }
    }
  }

  private fail(e: PresyncError): PresyncError {
    this.failure ??= e;
    return this.failure;
  }

  /**
   * Tells the peer why we give up (best effort), then closes. With
   * `lingerMs`, the connection is closed gracefully (our end first, the
   * peer's input dropped, cut after that long) instead of reset: a reset
   * while the peer's frames are still unread can reach the peer before our
   * ERROR, and the peer would see a connection reset instead of the reason.
   */
  async abortWith(err: unknown, o: { readonly lingerMs?: number } = {}): Promise<void> {
    // Straight to the connection: send() refuses once a failure is recorded,
    // and the usual reason to abort is a bad frame the peer must hear about.
    let timer: NodeJS.Timeout | undefined;
    try {
      const parts = encodeFrameParts(errorFrame(err));
      await Promise.race([this.conn.write(parts.length === 1 ? parts[0] : Buffer.concat(parts)), new Promise((r) => (timer = setTimeout(r, 500)))]);
    } catch {
      /* the peer may be gone already */
    } finally {
      clearTimeout(timer);
    }
    if ((o.lingerMs ?? 0) > 0) {
      try {
        await this.conn.close({ lingerMs: o.lingerMs });
        return;
      } catch {
        /* destroyed below */
      }
    }
    this.conn.destroy();
  }

  async close(): Promise<void> {
    try {
      await this.conn.close({ lingerMs: 1000 });
    } catch {
      this.conn.destroy();
    }
  }

  destroy(): void {
    this.conn.destroy();
  }
}
