import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { DEFAULT_MAX_FRAME_BYTES, HEADER_BYTES, PROTOCOL_VERSION } from './constants.ts';
import { crc32 } from './crc32.ts';
import type { Frame } from './frames.ts';
import { TYPE_CODE, encodePayload } from './payload.ts';

/**
 * Frame header, 16 bytes, little-endian:
 *   0 version u8 | 1 type u8 | 2 flags u16 (0) | 4 payloadLength u32 |
 *   8 payloadCrc u32 | 12 headerCrc u32 (CRC-32 of bytes 0..11)
 * The header has its own CRC so a corrupted length is caught before it is
 * trusted for buffering.
 */

export interface EncodeOptions {
  /** Refuse to produce frames bigger than this (header included). */
  readonly maxFrameBytes?: number;
}

/**
 * Encodes a frame as a list of buffers: the header, then payload parts. Page
 * payloads are referenced, not copied; hand the list to socket.cork()/write()
 * or writev. Do not mutate a page buffer until the write has completed.
 */
export function encodeFrameParts(frame: Frame, options: EncodeOptions = {}): Buffer[] {
  const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const parts = encodePayload(frame);
  let length = 0;
  let crc = 0;
  for (const p of parts) {
    length += p.length;
    crc = crc32(p, crc);
  }
  if (length + HEADER_BYTES > max) {
    throw new PresyncError(
      ErrorCodes.FRAME_TOO_LARGE,
      `${frame.type} frame would be ${length + HEADER_BYTES} bytes, limit ${max}; send fewer pages or smaller chunks per frame`,
    );
  }
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt8(PROTOCOL_VERSION, 0);
  header.writeUInt8(TYPE_CODE[frame.type], 1);
  header.writeUInt16LE(0, 2);
  header.writeUInt32LE(length, 4);
  header.writeUInt32LE(crc, 8);
  header.writeUInt32LE(crc32(header.subarray(0, 12)), 12);
  return [header, ...parts];
}

/** Encodes a frame into one contiguous buffer (copies page payloads once). */
export function encodeFrame(frame: Frame, options: EncodeOptions = {}): Buffer {
  const parts = encodeFrameParts(frame, options);
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/** Size on the wire of a frame, header included, without building it. */
export function frameSize(frame: Frame): number {
  let n = HEADER_BYTES;
  for (const p of encodePayload(frame)) n += p.length;
  return n;
}
