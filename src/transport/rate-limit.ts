/**
 * A send-rate limit that can change while connections are open (an
 * operator's `presync set --bandwidth RATE`, QEMU's `max-bandwidth`). One
 * token bucket is shared by every connection of the transport, so several
 * streams together keep to the limit. Without a limit writes go straight
 * through (no slicing, no timers); with one they are cut into slices of at
 * most 64 KiB that each wait for their tokens, as the fixed shaper does.
 * Writes stay in order across a change of limit.
 */
import { performance } from 'node:perf_hooks';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { defaultBurstBytes, TokenBucket } from './token-bucket.ts';
import type { Connection, ConnectionHandler, DialOptions, Listener, Transport, TransportAddress } from './types.ts';

const MAX_SLICE = 64 * 1024;

/** The current limit; shared by every connection of a {@link RateLimitedTransport}. */
export class RateLimit {
  #bucket: TokenBucket | null = null;
  readonly #clock: () => number;

  constructor(bytesPerSec: number | null = null, clock: () => number = () => performance.now()) {
    this.#clock = clock;
    this.set(bytesPerSec);
  }

  /** Bytes/s, or null for no limit. */
  get bytesPerSec(): number | null {
    return this.#bucket ? this.#bucket.rateBytesPerSec : null;
  }

  /** Changes the limit from now on (null: none). */
  set(bytesPerSec: number | null): void {
    if (bytesPerSec === null) {
      this.#bucket = null;
      return;
    }
    if (!(bytesPerSec > 0) || !Number.isFinite(bytesPerSec)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `bandwidth must be a positive number of bytes/s, got ${bytesPerSec}`);
    }
    const now = this.#clock();
    if (this.#bucket) this.#bucket.setRate(bytesPerSec, now);
    else this.#bucket = new TokenBucket({ rateBytesPerSec: bytesPerSec, burstBytes: defaultBurstBytes(bytesPerSec), nowMs: now });
  }

  /** ms to wait before `bytes` may go (0: now); null when unlimited. */
  take(bytes: number): number | null {
    return this.#bucket ? this.#bucket.take(bytes, this.#clock()) : null;
  }

  sliceBytes(): number {
    return this.#bucket ? Math.max(1, Math.min(MAX_SLICE, Math.floor(this.#bucket.burstBytes))) : Number.POSITIVE_INFINITY;
  }

  now(): number {
    return this.#clock();
  }
}

class RateLimitedConnection implements Connection {
  readonly #inner: Connection;
  readonly #limit: RateLimit;
  #chain: Promise<unknown> = Promise.resolve();
  #queued = 0;
  #accepted = 0;
  #aborted: Error | undefined;
  readonly #sleepers = new Set<() => void>();

  constructor(inner: Connection, limit: RateLimit) {
    this.#inner = inner;
    this.#limit = limit;
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
    this.#accepted += chunk.byteLength;
    this.#queued += chunk.byteLength;
    const run = this.#chain.then(() => this.#send(chunk));
    this.#chain = run.catch(() => undefined);
    return run;
  }

  async #send(chunk: Uint8Array): Promise<void> {
    let off = 0;
    try {
      while (off < chunk.byteLength) {
        const n = Math.min(this.#limit.sliceBytes(), chunk.byteLength - off);
        const wait = this.#limit.take(n);
        if (wait !== null && wait > 0) await this.#sleep(wait);
        await this.#inner.write(off === 0 && n === chunk.byteLength ? chunk : chunk.subarray(off, off + n));
        off += n;
        this.#queued -= n;
      }
    } finally {
      this.#queued -= chunk.byteLength - off;
    }
  }

  async #sleep(ms: number): Promise<void> {
    const until = this.#limit.now() + ms;
    for (;;) {
      if (this.#aborted) throw this.#aborted;
      const left = until - this.#limit.now();
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

/** Wraps a transport so that everything it sends keeps to `limit`, which may change at any time. */
export class RateLimitedTransport implements Transport {
  readonly name: string;

  constructor(
    private readonly inner: Transport,
    readonly limit: RateLimit,
  ) {
    this.name = `rate-limited(${inner.name})`;
  }

  listen(address: TransportAddress, onConnection: ConnectionHandler): Promise<Listener> {
    return this.inner.listen(address, (c) => onConnection(new RateLimitedConnection(c, this.limit)));
  }

  async dial(address: TransportAddress, options?: DialOptions): Promise<Connection> {
    return new RateLimitedConnection(await this.inner.dial(address, options), this.limit);
  }
}
