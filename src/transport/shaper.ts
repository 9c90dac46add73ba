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
import { PacedConnection } from './paced-connection.ts';
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

/** A connection paced by a fixed token bucket (its own, or one shared by a transport). */
export class ShapedConnection extends PacedConnection {
  readonly bucket: TokenBucket;

  constructor(inner: Connection, options: ShapedConnectionOptions) {
    const clock = options.clock ?? (() => performance.now());
    const bucket = options.bucket ?? makeBucket(options);
    const slice = options.sliceBytes ?? Math.min(64 * 1024, Math.max(1, Math.floor(bucket.burstBytes)));
    if (!Number.isInteger(slice) || slice < 1) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `shaper: sliceBytes must be a positive integer, got ${slice}`);
    }
    super(inner, { take: (n) => bucket.take(n, clock()), sliceBytes: () => slice, now: clock });
    this.bucket = bucket;
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
