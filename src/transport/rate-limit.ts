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
import { PacedConnection, type Pacer } from './paced-connection.ts';
import type { Connection, ConnectionHandler, DialOptions, Listener, Transport, TransportAddress } from './types.ts';

const MAX_SLICE = 64 * 1024;

/** The current limit; shared by every connection of a {@link RateLimitedTransport}. */
export class RateLimit implements Pacer {
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
    return this.inner.listen(address, (c) => onConnection(new PacedConnection(c, this.limit)));
  }

  async dial(address: TransportAddress, options?: DialOptions): Promise<Connection> {
    return new PacedConnection(await this.inner.dial(address, options), this.limit);
  }
}
