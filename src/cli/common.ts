import { readFileSync } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { parseAddress } from '../transport/address.ts';
import { checkSecretStrength } from '../wire/handshake.ts';
import { parseDuration, parseRate } from '../transport/rate.ts';
import { ShapedTransport } from '../transport/shaper.ts';
import { TcpTransport } from '../transport/tcp.ts';
import { TlsTransport } from '../transport/tls.ts';
import type { Transport, TransportAddress } from '../transport/types.ts';

export const TRANSPORT_FLAGS = {
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  bandwidth: { type: 'string' },
} as const;

/** The shared secret: a file's bytes with one trailing newline removed; at least 16 bytes. */
export function readSecret(path: string | undefined): Buffer {
  if (!path) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, '--secret-file is required (a file holding at least 16 bytes shared by both agents)');
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `cannot read --secret-file ${path}: ${(e as Error).message}`);
  }
  if (b.length > 0 && b[b.length - 1] === 0x0a) b = b.subarray(0, b.length - 1);
  checkSecretStrength(b, `--secret-file ${path}`);
  return b;
}

function readPem(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `cannot read --${flag} ${path}: ${(e as Error).message}`);
  }
}

export interface TransportFlagValues {
  'tls-cert'?: string | undefined;
  'tls-key'?: string | undefined;
  'tls-ca'?: string | undefined;
  bandwidth?: string | undefined;
}

/** TCP, or TLS when any --tls-* flag is given, shaped when --bandwidth is given. */
export function transportFromFlags(v: TransportFlagValues): { transport: Transport; bandwidthBytesPerSec?: number } {
  const tls = v['tls-cert'] !== undefined || v['tls-key'] !== undefined || v['tls-ca'] !== undefined;
  let t: Transport = tls
    ? new TlsTransport({
        ...(v['tls-cert'] ? { cert: readPem(v['tls-cert'], 'tls-cert') } : {}),
        ...(v['tls-key'] ? { key: readPem(v['tls-key'], 'tls-key') } : {}),
        ...(v['tls-ca'] ? { ca: readPem(v['tls-ca'], 'tls-ca') } : {}),
      })
    : new TcpTransport();
  if (v.bandwidth !== undefined) {
    const rate = parseRate(v.bandwidth);
    t = new ShapedTransport(t, { rate });
    return { transport: t, bandwidthBytesPerSec: rate };
  }
  return { transport: t };
}

/** The TLS flags as library options (paths; read when the transport is made). */
export function tlsFromFlags(v: TransportFlagValues): { cert?: Uint8Array; key?: Uint8Array; ca?: Uint8Array } {
  return {
    ...(v['tls-cert'] ? { cert: readPem(v['tls-cert'], 'tls-cert') } : {}),
    ...(v['tls-key'] ? { key: readPem(v['tls-key'], 'tls-key') } : {}),
    ...(v['tls-ca'] ? { ca: readPem(v['tls-ca'], 'tls-ca') } : {}),
  };
}

/** `--bandwidth RATE` in bytes/s. */
export function bandwidthFlag(value: string | undefined, flag = 'bandwidth'): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseRate(value);
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${flag}: ${(e as Error).message}`);
  }
}

export function addressFlag(value: string | undefined, flag: string): TransportAddress {
  if (!value) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${flag} HOST:PORT is required`);
  return parseAddress(value);
}

export function durationFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseDuration(value);
  } catch (e) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${flag}: ${(e as Error).message}`);
  }
}

/** JSON with bigints as strings; one line. */
export function jsonLine(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x)) + '\n';
}
