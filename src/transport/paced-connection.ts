/**
 * A Connection whose writes wait for a pacer's tokens: the one implementation
 * behind the fixed shaper (shaper.ts) and the changeable rate limit
 * (rate-limit.ts). Writes are cut into slices of at most `sliceBytes()`, each
 * waits for its tokens and is then handed to the inner connection; `write()`
 * resolves only after the inner write did, so backpressure passes through.
 * Writes are serialized, so concurrent callers keep their order. Only
 * sending is paced.
 */
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { Connection } from './types.ts';

export interface Pacer {
  /** ms to wait before `bytes` may go (0: now); null when there is no limit now. */
  take(bytes: number): number | null;
  /** Largest piece handed to the inner connection at once (Infinity: whole writes). */
  sliceBytes(): number;
  /** Milliseconds clock the waits are measured on. */
  now(): number;
}

export class PacedConnection implements Connection {
  readonly #inner: Connection;
  readonly #pacer: Pacer;
  #chain: Promise<unknown> = Promise.resolve();
  #queued = 0;
  #accepted = 0;
  #aborted: Error | undefined;
  readonly #sleepers = new Set<() => void>();

  constructor(inner: Connection, pacer: Pacer) {
    this.#inner = inner;
    this.#pacer = pacer;
    void inner.closed.then((e) => this.#abortSleeps(e ?? new PresyncError(ErrorCodes.CONNECTION, `connection to ${inner.remote} closed`)));
  }

  get remote(): string {
    return this.#inner.remote;
  }
  get closed(): Promise<PresyncError | undefined> {
    return this.#inner.closed;
  }
  get bytesRead(): number {
    return this.#inner.bytesRead;
  }
  get bytesWritten(): number {
    return this.#accepted;
  }
  get writableLength(): number {
    return this.#queued + this.#inner.writableLength;
  }

  write(chunk: Uint8Array): Promise<void> {
    if (!(chunk instanceof Uint8Array)) {
      return Promise.reject(new PresyncError(ErrorCodes.BAD_ARGUMENT, 'Connection.write expects a Uint8Array'));
    }
    this.#accepted += chunk.byteLength;
    this.#queued += chunk.byteLength;
    const run = this.#chain.then(() => this.#send(chunk));
    // A failed write fails every later one too (the inner connection is broken),
    // but the chain itself must not carry an unhandled rejection.
    this.#chain = run.catch(() => undefined);
    return run;
  }

  async #send(chunk: Uint8Array): Promise<void> {
    let off = 0;
    try {
      while (off < chunk.byteLength) {
        const n = Math.min(this.#pacer.sliceBytes(), chunk.byteLength - off);
        const wait = this.#pacer.take(n);
        if (wait !== null && wait > 0) await this.#sleepUntil(this.#pacer.now() + wait);
        await this.#inner.write(off === 0 && n === chunk.byteLength ? chunk : chunk.subarray(off, off + n));
        off += n;
        this.#queued -= n;
      }
    } finally {
      this.#queued -= chunk.byteLength - off;
    }
  }

  /** Sleeps by the pacer's clock: timers may fire early by a tick, the rate must not. */
  async #sleepUntil(targetMs: number): Promise<void> {
    for (;;) {
      if (this.#aborted) throw this.#aborted;
      const left = targetMs - this.#pacer.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const sleepers = this.#sleepers;
        const t = setTimeout(done, Math.max(1, Math.ceil(left)));
        function done(): void {
          clearTimeout(t);
          sleepers.delete(done);
          resolve();
        }
        sleepers.add(done);
      });
    }
  }

  #abortSleeps(err: Error): void {
    this.#aborted ??= err;
    for (const w of [...this.#sleepers]) w();
  }

  read(): Promise<Uint8Array | null> {
    return this.#inner.read();
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.#inner[Symbol.asyncIterator]();
  }

  async closeWrite(): Promise<void> {
    // Everything already accepted goes out at the paced rate first.
    await this.#chain;
    await this.#inner.closeWrite();
  }

  async close(options?: { lingerMs?: number }): Promise<void> {
    await this.#chain;
    await this.#inner.close(options);
  }

  destroy(err?: Error): void {
    this.#abortSleeps(err ?? new PresyncError(ErrorCodes.CONNECTION, `connection to ${this.remote} was destroyed locally`));
    this.#inner.destroy(err);
  }
}
