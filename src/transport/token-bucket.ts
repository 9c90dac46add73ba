/**
 * Token bucket, pure: no timers, no clock of its own. Callers pass the time.
 *
 * The bucket holds up to `burstBytes` tokens and refills at `rateBytesPerSec`.
 * `take(n, now)` always debits n tokens, possibly driving the balance negative
 * (a debt), and returns how long the caller must wait before sending so that
 * the long-run rate holds: the time for the refill to repay the debt. Allowing
 * debt lets a single request exceed the burst without being refused, and keeps
 * concurrent takers in FIFO order (each later taker inherits the earlier debt).
 *
 * Burst: a full bucket lets `burstBytes` go out at once; after that, traffic
 * leaves at `rateBytesPerSec`. Over any window of T ms at most
 * burstBytes + rate * T / 1000 bytes are released.
 */
import { ErrorCodes, PresyncError } from '../core/errors.ts';

export interface TokenBucketOptions {
  readonly rateBytesPerSec: number;
  /** Bucket size. Defaults to {@link defaultBurstBytes}(rate). */
  readonly burstBytes?: number;
  /** Time at creation, ms (same clock as later calls). The bucket starts full. */
  readonly nowMs: number;
}

/** 10 ms of traffic at the rate, but at least 16 KiB so small rates still move whole frames. */
export function defaultBurstBytes(rateBytesPerSec: number): number {
  return Math.max(16 * 1024, Math.ceil(rateBytesPerSec / 100));
}

export class TokenBucket {
  #rate: number;
  #burst: number;
  #tokens: number;
  #lastMs: number;

  constructor(options: TokenBucketOptions) {
    this.#rate = checkRate(options.rateBytesPerSec);
    this.#burst = checkBurst(options.burstBytes ?? defaultBurstBytes(this.#rate));
    this.#tokens = this.#burst;
    this.#lastMs = options.nowMs;
  }

  get rateBytesPerSec(): number {
    return this.#rate;
  }

  get burstBytes(): number {
    return this.#burst;
  }

  /** Balance as of the last call (negative while in debt). */
  get tokens(): number {
    return this.#tokens;
  }

  /** Balance at `nowMs`, without changing anything observable. */
  tokensAt(nowMs: number): number {
    const dt = Math.max(0, nowMs - this.#lastMs);
    return Math.min(this.#burst, this.#tokens + (this.#rate * dt) / 1000);
  }

  /** Debits `bytes` and returns the wait in ms before they may be sent (0 if none). */
  take(bytes: number, nowMs: number): number {
    if (!(bytes >= 0) || !Number.isFinite(bytes)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `token bucket: byte count must be a finite number >= 0, got ${bytes}`);
    }
    this.#refill(nowMs);
    this.#tokens -= bytes;
    return this.#tokens >= 0 ? 0 : (-this.#tokens * 1000) / this.#rate;
  }

  /** Wait in ms until `bytes` could be taken without debt; does not debit. */
  delayFor(bytes: number, nowMs: number): number {
    const deficit = bytes - this.tokensAt(nowMs);
    return deficit <= 0 ? 0 : (deficit * 1000) / this.#rate;
  }

  /** Changes the rate from `nowMs` on; tokens earned so far are kept. */
  setRate(rateBytesPerSec: number, nowMs: number, burstBytes?: number): void {
    this.#refill(nowMs);
    this.#rate = checkRate(rateBytesPerSec);
    this.#burst = checkBurst(burstBytes ?? defaultBurstBytes(this.#rate));
    this.#tokens = Math.min(this.#tokens, this.#burst);
  }

  #refill(nowMs: number): void {
    // A clock that steps back must not mint tokens nor lose the debt.
    if (nowMs > this.#lastMs) {
      this.#tokens = Math.min(this.#burst, this.#tokens + (this.#rate * (nowMs - this.#lastMs)) / 1000);
      this.#lastMs = nowMs;
    }
  }
}

function checkRate(rate: number): number {
  if (!(rate > 0) || !Number.isFinite(rate)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `token bucket: rate must be a positive number of bytes/s, got ${rate}`);
  }
  return rate;
}

function checkBurst(burst: number): number {
  if (!(burst >= 1) || !Number.isFinite(burst)) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `token bucket: burst must be at least 1 byte, got ${burst}`);
  }
  return burst;
}
