import { ErrorCodes, PresyncError } from '../core/errors.ts';

/**
 * Bounds-checked little-endian cursors. Every read past the end, every length
 * over its limit and every invalid UTF-8 string is a PRESYNC_ERR_PROTOCOL: the
 * bytes come from a peer we do not trust.
 */

// ignoreBOM keeps a leading U+FEFF: dropping it would make decoding lossy, and proofs are over re-encoded frames.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8enc = new TextEncoder();

function protocol(message: string): PresyncError {
  return new PresyncError(ErrorCodes.PROTOCOL, message);
}

export class Reader {
  private readonly view: DataView;
  private pos = 0;

  constructor(private readonly buf: Uint8Array, private readonly what: string) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number, field: string): void {
    if (this.remaining < n) throw protocol(`${this.what}: truncated at ${field} (needs ${n} bytes, ${this.remaining} left)`);
  }

  u8(field: string): number {
    this.need(1, field);
    return this.view.getUint8(this.pos++);
  }

  u16(field: string): number {
    this.need(2, field);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  u64(field: string): bigint {
    this.need(8, field);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** A u64 that the API exposes as a number: above 2^53-1 it is refused rather than rounded. */
  u64n(field: string): number {
    const v = this.u64(field);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw protocol(`${this.what}: ${field} ${v} exceeds 2^53-1`);
    return Number(v);
  }

  bool(field: string): boolean {
    const v = this.u8(field);
    if (v > 1) throw protocol(`${this.what}: ${field} must be 0 or 1, got ${v}`);
    return v === 1;
  }

  /** A view into the input, not a copy. */
  bytes(n: number, field: string): Uint8Array {
    this.need(n, field);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** A copy, for small fields (nonces, proofs) that must outlive the input. */
  copy(n: number, field: string): Uint8Array {
    return Uint8Array.from(this.bytes(n, field));
  }

  rest(): Uint8Array {
    return this.bytes(this.remaining, 'rest');
  }

  str8(max: number, field: string): string {
    return this.strOf(this.u8(field), max, field);
  }

  str16(max: number, field: string): string {
    return this.strOf(this.u16(field), max, field);
  }

  private strOf(len: number, max: number, field: string): string {
    if (len > max) throw protocol(`${this.what}: ${field} is ${len} bytes, limit ${max}`);
    const b = this.bytes(len, field);
    try {
      return utf8.decode(b);
    } catch {
      throw protocol(`${this.what}: ${field} is not valid UTF-8`);
    }
  }

  end(): void {
    if (this.remaining !== 0) throw protocol(`${this.what}: ${this.remaining} unexpected trailing bytes`);
  }
}

function badArg(message: string): PresyncError {
  return new PresyncError(ErrorCodes.BAD_ARGUMENT, message);
}

/** Fixed-size writer: callers compute the exact size first, so nothing is reallocated. */
export class Writer {
  readonly buf: Buffer;
  private pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  u8(v: number, field: string): this {
    checkUint(v, 0xff, field);
    this.buf.writeUInt8(v, this.pos);
    this.pos += 1;
    return this;
  }

  u16(v: number, field: string): this {
    checkUint(v, 0xffff, field);
    this.buf.writeUInt16LE(v, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number, field: string): this {
    checkUint(v, 0xffffffff, field);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
    return this;
  }

  u64(v: bigint, field: string): this {
    if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) throw badArg(`${field} must be a u64 bigint, got ${String(v)}`);
    this.buf.writeBigUInt64LE(v, this.pos);
    this.pos += 8;
    return this;
  }

  u64n(v: number, field: string): this {
    checkUint(v, Number.MAX_SAFE_INTEGER, field);
    return this.u64(BigInt(v), field);
  }

  bool(v: boolean): this {
    this.buf.writeUInt8(v ? 1 : 0, this.pos);
    this.pos += 1;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** Writes a length-prefixed string already encoded with encodeStr(). */
  str(encoded: Uint8Array, prefixBytes: 1 | 2): this {
    if (prefixBytes === 1) this.u8(encoded.length, 'string length');
    else this.u16(encoded.length, 'string length');
    return this.bytes(encoded);
  }

  done(): Buffer {
    if (this.pos !== this.buf.length) throw new PresyncError(ErrorCodes.INTERNAL, `writer filled ${this.pos} of ${this.buf.length} bytes`);
    return this.buf;
  }
}

export function checkUint(v: number, max: number, field: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw badArg(`${field} must be an integer in 0..${max}, got ${v}`);
}

export function encodeStr(s: string, max: number, field: string): Uint8Array {
  if (typeof s !== 'string') throw badArg(`${field} must be a string`);
  const b = utf8enc.encode(s);
  if (b.length > max) throw badArg(`${field} is ${b.length} bytes in UTF-8, limit ${max}`);
  return b;
}
