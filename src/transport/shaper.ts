/**
 * Send-rate shaping with a token bucket, for any Connection or Transport.
 *
 * Writes are cut into slices of at most `sliceBytes` (default: the burst,
 * capped at 64 KiB) so a large write is paced smoothly instead of going out in
 * one lump after a long wait. Each slice waits for its tokens and is then
 * handed to the inner connection; the shaped `write()` resolves only after
 * the inner write did, so backpressure passes through untouched. Writes are
 * serialized, so concurrent callers keep their order.
 *
 * Only sending is shaped. Shaping a Transport shapes both ends of every
 * connection it makes, each with its own bucket unless `shared` is set (one
 * bucket for all connections: a single shaped link).
 */
import { performance } from 'node:perf_hooks';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { parseRate } from './rate.ts';
import { defaultBurstBytes, TokenBucket } from './token-bucket.ts';
import type { Connection, ConnectionHandler, DialOptions, Listener, Transport, TransportAddress } from './types.ts';

export interface ShaperOptions {
  /** Bytes per second, or a rate string for {@link parseRate} (`'100mbit'`). */
  readonly rate: number | string;
  /** Bucket size, bytes. Default: {@link defaultBurstBytes}. */
  readonly burstBytes?: number;
  /** Largest piece handed to the inner connection at once. */
  readonly sliceBytes?: number;
  /** Milliseconds clock; default performance.now. */
  readonly clock?: () => number;
}

export interface ShapedConnectionOptions extends ShaperOptions {
  /** Share this bucket (and its rate) instead of making one. */
  readonly bucket?: TokenBucket;
}

function resolveRate(rate: number | string): number {
  const r = typeof rate === 'string' ? parseRate(rate) : rate;
  if (!(r > 0) || !Number.isFinite(r)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `shaper: rate must be a positive number of bytes/s, got ${rate}`);
  }
  return r;
}

export function makeBucket(options: ShaperOptions): TokenBucket {
  const clock = options.clock ?? (() => performance.now());
  const rate = resolveRate(options.rate);
  return new TokenBucket({ rateBytesPerSec: rate, burstBytes: options.burstBytes ?? defaultBurstBytes(rate), nowMs: clock() });
}

export class ShapedConnection implements Connection {
  readonly bucket: TokenBucket;
  readonly #inner: Connection;
  readonly #clock: () => number;
  readonly #slice: number;
  #chain: Promise<unknown> = Promise.resolve();
  #queued = 0;
  #accepted = 0;
  #aborted: Error | undefined;
  #wakeSleepers = new Set<() => void>();

  constructor(inner: Connection, options: ShapedConnectionOptions) {
    this.#inner = inner;
    this.#clock = options.clock ?? (() => performance.now());
    this.bucket = options.bucket ?? makeBucket(options);
    const slice = options.sliceBytes ?? Math.min(64 * 1024, Math.max(1, Math.floor(this.bucket.burstBytes)));
    if (!Number.isInteger(slice) || slice < 1) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `shaper: sliceBytes must be a positive integer, got ${slice}`);
    }
    this.#slice = slice;
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
        const n = Math.min(this.#slice, chunk.byteLength - off);
        const wait = this.bucket.take(n, this.#clock());
        if (wait > 0) await this.#sleepUntil(this.#clock() + wait);
        await this.#inner.write(chunk.subarray(off, off + n));
        off += n;
        this.#queued -= n;
      }
    } finally {
      this.#queued -= chunk.byteLength - off;
    }
  }

  /** Sleeps by the injected clock: timers may fire early by a tick, the rate must not. */
  async #sleepUntil(targetMs: number): Promise<void> {
    for (;;) {
      if (this.#aborted) throw this.#aborted;
      const left = targetMs - this.#clock();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.max(1, Math.ceil(left)));
        const sleepers = this.#wakeSleepers;
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
    for (const w of [...this.#wakeSleepers]) w();
  }

  read(): Promise<Uint8Array | null> {
    return this.#inner.read();
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.#inner[Symbol.asyncIterator]();
  }

  async closeWrite(): Promise<void> {
    // Everything already accepted goes out at the shaped rate first.
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

/** Wraps one connection. */
export function shapeConnection(inner: Connection, options: ShapedConnectionOptions): ShapedConnection {
  return new ShapedConnection(inner, options);
}

export interface ShapedTransportOptions extends ShaperOptions {
  /** One bucket for every connection of this transport (default: one per connection). */
  readonly shared?: boolean;
}

export class ShapedTransport implements Transport {
  readonly name: string;
  readonly #inner: Transport;
  readonly #options: ShapedTransportOptions;
  readonly #shared: TokenBucket | undefined;

  constructor(inner: Transport, options: ShapedTransportOptions) {
    this.#inner = inner;
    this.#options = options;
    this.name = `shaped(${inner.name})`;
    const bucket = makeBucket(options); // validates the rate now, not at first connection
    this.#shared = options.shared ? bucket : undefined;
  }

  #wrap(c: Connection): ShapedConnection {
    return new ShapedConnection(c, { ...this.#options, ...(this.#shared ? { bucket: this.#shared } : {}) });
  }

  listen(address: TransportAddress, onConnection: ConnectionHandler): Promise<Listener> {
    return this.#inner.listen(address, (c) => onConnection(this.#wrap(c)));
  }

  async dial(address: TransportAddress, options?: DialOptions): Promise<Connection> {
    return this.#wrap(await this.#inner.dial(address, options));
  }
}
