import { readFileSync } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { parseDuration, parseRate } from '../transport/rate.ts';
import { ShapedTransport } from '../transport/shaper.ts';
import { TcpTransport } from '../transport/tcp.ts';
import { TlsTransport } from '../transport/tls.ts';
import type { Transport } from '../transport/types.ts';

/** A duration: milliseconds, or a string such as `3s`, `250ms`, `1m30s`. */
export type Duration = number | string;
/** A rate: bytes per second, or a string such as `1gbit`, `100mbit`, `50MB/s`. */
export type Rate = number | string;

export interface TlsOptions {
  /** PEM certificate (bytes, or a path to read). */
  readonly cert?: Uint8Array | string;
  readonly key?: Uint8Array | string;
  /** PEM CA: the peer must present a certificate it signed (mutual TLS). */
  readonly ca?: Uint8Array | string;
}

export function toMs(v: Duration, what: string): number {
  if (typeof v === 'number') {
    if (!(v >= 0) || !Number.isFinite(v)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `${what} must be a non-negative number of ms, got ${v}`);
    return v;
  }
  try {
    return parseDuration(v);
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `${what}: ${(e as Error).message}`);
  }
}

export function toBytesPerSec(v: Rate, what: string): number {
  if (typeof v === 'number') {
    if (!(v > 0) || !Number.isFinite(v)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `${what} must be a positive number of bytes/s, got ${v}`);
    return v;
  }
  try {
    return parseRate(v);
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `${what}: ${(e as Error).message}`);
  }
}

/** The shared secret: bytes as given, or a string's UTF-8 bytes; at least 16. */
export function toSecret(v: Uint8Array | string): Uint8Array {
  const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
  if (b.length < 16) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `the secret holds ${b.length} bytes; at least 16 are needed`);
  return b;
}

function pem(v: Uint8Array | string, what: string): Uint8Array {
  if (typeof v !== 'string') return v;
  try {
    return readFileSync(v);
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `cannot read ${what} ${v}: ${(e as Error).message}`);
  }
}

/** TCP, or TLS when any TLS option is given; `shapeBytesPerSec` adds a fixed token-bucket shaper. */
export function makeTransport(tls: TlsOptions | undefined, shapeBytesPerSec?: number): Transport {
  let t: Transport =
    tls && (tls.cert !== undefined || tls.key !== undefined || tls.ca !== undefined)
      ? new TlsTransport({
          ...(tls.cert !== undefined ? { cert: Buffer.from(pem(tls.cert, 'TLS certificate')) } : {}),
          ...(tls.key !== undefined ? { key: Buffer.from(pem(tls.key, 'TLS key')) } : {}),
          ...(tls.ca !== undefined ? { ca: Buffer.from(pem(tls.ca, 'TLS CA')) } : {}),
        })
      : new TcpTransport();
  if (shapeBytesPerSec !== undefined) t = new ShapedTransport(t, { rate: shapeBytesPerSec });
  return t;
}
