import { ErrorCodes, PresyncError, toPresyncError } from '../core/errors.ts';
import type { Geometry } from '../core/types.ts';
import { DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES, HEADER_BYTES, MIN_MAX_FRAME_BYTES, PROTOCOL_VERSION, type FrameTypeCode } from './constants.ts';
import { crc32 } from './crc32.ts';
import type { Frame } from './frames.ts';
import { decodePayload, isKnownFrameType } from './payload.ts';

export interface DecoderOptions {
  /** Largest accepted frame, header included. Checked from the header, before any payload is buffered. */
  readonly maxFrameBytes?: number;
  /** Page geometry, if already known; see setGeometry(). */
  readonly geometry?: Geometry;
}

interface PendingHeader {
  readonly type: FrameTypeCode;
  readonly length: number;
  readonly crc: number;
}

/**
 * Incremental frame decoder: feed it socket chunks of any size, get whole,
 * checked frames back. It holds at most one partial frame. After the first
 * error it stays failed and rethrows that error: a byte stream that went
 * wrong once cannot be trusted to realign.
 *
 * Decoded frames may view the pushed chunks (no copy when a frame lies within
 * one chunk); do not reuse a chunk's memory after pushing it.
 */
export class FrameDecoder {
  private maxFrameBytes: number;
  private geometry: Geometry | undefined;
  private chunks: Uint8Array[] = [];
  private head = 0; // index of the first unconsumed chunk; a moving index, not shift(), keeps byte-at-a-time feeding linear
  private offset = 0; // into chunks[head]
  private buffered = 0;
  private header: PendingHeader | undefined;
  private failure: PresyncError | undefined;

  constructor(options: DecoderOptions = {}) {
    const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (!Number.isInteger(max) || max < MIN_MAX_FRAME_BYTES || max > 0xffffffff) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `maxFrameBytes must be an integer in ${MIN_MAX_FRAME_BYTES}..${0xffffffff}, got ${max}`);
    }
    this.maxFrameBytes = max;
    this.geometry = options.geometry;
  }

  /**
   * Changes the frame limit for frames whose header is still to come, e.g.
   * HANDSHAKE_MAX_FRAME_BYTES until the peer authenticated, then the full one.
   */
  setMaxFrameBytes(max: number): void {
    if (!Number.isInteger(max) || max < HANDSHAKE_MAX_FRAME_BYTES || max > 0xffffffff) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `maxFrameBytes must be an integer in ${HANDSHAKE_MAX_FRAME_BYTES}..${0xffffffff}, got ${max}`);
    }
    this.maxFrameBytes = max;
  }

  /** Once the handshake fixed the geometry, page indices and sizes are checked at decode time. */
  setGeometry(geometry: Geometry): void {
    this.geometry = geometry;
  }

  /** Bytes received but not yet returned as frames. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  get failed(): PresyncError | undefined {
    return this.failure;
  }

  /** Feeds bytes; returns every frame they complete, in order. Throws PresyncError on bad input. */
  push(chunk: Uint8Array): Frame[] {
    if (this.failure) throw this.failure;
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: Frame[] = [];
    try {
      for (;;) {
        const f = this.next();
        if (f === undefined) break;
        out.push(f);
      }
    } catch (e) {
      this.fail(toPresyncError(e));
      throw this.failure;
    }
    return out;
  }

  /** Call at end of stream: a half-received frame means the peer went away mid-message. */
  end(): void {
    if (this.failure) throw this.failure;
    if (this.buffered > 0) {
      this.fail(new PresyncError(ErrorCodes.CONNECTION, `stream ended inside a frame (${this.buffered} bytes pending)`));
      throw this.failure;
    }
  }

  private fail(e: PresyncError): void {
    this.failure = e;
    this.chunks = [];
    this.head = 0;
    this.offset = 0;
    this.buffered = 0;
    this.header = undefined;
  }

  private next(): Frame | undefined {
    if (this.header === undefined) {
      if (this.buffered < HEADER_BYTES) return undefined;
      this.header = this.parseHeader(this.take(HEADER_BYTES));
    }
    const h = this.header;
    if (this.buffered < h.length) return undefined;
    const payload = this.take(h.length);
    this.header = undefined;
    if (crc32(payload) !== h.crc) {
      throw new PresyncError(ErrorCodes.CHECKSUM, 'frame payload CRC-32 mismatch: the stream is corrupted');
    }
    return decodePayload(h.type, payload, this.geometry);
  }

  private parseHeader(b: Uint8Array): PendingHeader {
    const v = new DataView(b.buffer, b.byteOffset, HEADER_BYTES);
    if (crc32(b.subarray(0, 12)) !== v.getUint32(12, true)) {
      throw new PresyncError(ErrorCodes.CHECKSUM, 'frame header CRC-32 mismatch: the stream is corrupted or the peer does not speak presync');
    }
    const version = v.getUint8(0);
    if (version !== PROTOCOL_VERSION) {
      throw new PresyncError(ErrorCodes.VERSION, `peer speaks wire protocol version ${version}, this build speaks ${PROTOCOL_VERSION}; upgrade one side`);
    }
    const type = v.getUint8(1);
    const flags = v.getUint16(2, true);
    const length = v.getUint32(4, true);
    if (flags !== 0) throw new PresyncError(ErrorCodes.PROTOCOL, `frame flags 0x${flags.toString(16)} are reserved and must be 0`);
    if (length + HEADER_BYTES > this.maxFrameBytes) {
      throw new PresyncError(ErrorCodes.FRAME_TOO_LARGE, `peer announced a ${length + HEADER_BYTES}-byte frame, limit ${this.maxFrameBytes}`);
    }
    if (!isKnownFrameType(type)) throw new PresyncError(ErrorCodes.PROTOCOL, `unknown frame type 0x${type.toString(16)}`);
    return { type, length, crc: v.getUint32(8, true) };
  }

  /** Removes n buffered bytes (n <= buffered); a view when they lie in one chunk, else one copy. */
  private take(n: number): Uint8Array {
    const first = this.chunks[this.head];
    if (n === 0) return new Uint8Array(0);
    if (first.length - this.offset >= n) {
      const v = first.subarray(this.offset, this.offset + n);
      this.consume(n);
      return v;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[this.head];
      const k = Math.min(n - filled, c.length - this.offset);
      out.set(c.subarray(this.offset, this.offset + k), filled);
      filled += k;
      this.consume(k);
    }
    return out;
  }

  private consume(n: number): void {
    this.offset += n;
    this.buffered -= n;
    if (this.offset === this.chunks[this.head].length) {
      this.head++;
      this.offset = 0;
      if (this.head === this.chunks.length) {
        this.chunks = [];
        this.head = 0;
      } else if (this.head >= 1024 && this.head * 2 >= this.chunks.length) {
        this.chunks = this.chunks.slice(this.head);
        this.head = 0;
      }
    }
  }
}
