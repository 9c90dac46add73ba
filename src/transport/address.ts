/** `host:port` strings for flags and logs; IPv6 hosts in brackets (`[::1]:7070`). */
import { isIPv6 } from 'node:net';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { TransportAddress } from './types.ts';

export function formatAddress(a: TransportAddress): string {
  return isIPv6(a.host) ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * Parses `host:port`, `[v6]:port` or `:port` (host = `defaultHost`).
 * Port 0 is allowed (listen on any free port).
 */
export function parseAddress(text: string, defaultHost = '127.0.0.1'): TransportAddress {
  const bad = (why: string): PresyncError =>
    new PresyncError(
      ErrorCodes.BAD_ARGUMENT,
      `invalid address ${JSON.stringify(text)}: ${why}; write host:port, [ipv6]:port or :port (port 0-65535)`,
    );
  if (typeof text !== 'string' || text.trim() === '') throw bad('empty');
  const t = text.trim();
  const m = /^(?:\[([^\]]+)\]|([^:[\]\s]*)):(\d{1,5})$/.exec(t);
  if (!m) throw bad('expected host:port');
  const host = m[1] ?? m[2] ?? '';
  if (m[1] !== undefined && !isIPv6(m[1])) throw bad(`${m[1]} is not an IPv6 address`);
  const port = Number(m[3]);
  if (port > 65535) throw bad('port out of range');
  return { host: host === '' ? defaultHost : host, port };
}

export function checkAddress(a: TransportAddress): void {
  if (typeof a?.host !== 'string' || a.host === '' || !Number.isInteger(a.port) || a.port < 0 || a.port > 65535) {
    throw new PresyncError(
      ErrorCodes.BAD_ARGUMENT,
      `invalid address ${JSON.stringify(a)}: need { host: non-empty string, port: integer 0-65535 }`,
    );
  }
}
