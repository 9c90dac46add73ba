import { createHash, timingSafeEqual } from 'node:crypto';
import { endianness } from 'node:os';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { DEFAULT_MAX_FRAME_BYTES, HEADER_BYTES, MAX_VERIFY_MISMATCHES } from './constants.ts';
import type { DigestRun, HaveFrame, VerifyRequestFrame, VerifyResponseFrame, VerifySummaryFrame } from './frames.ts';

/** Bytes a HAVE / VERIFY_REQUEST payload spends before its digests: first u32, count u32, final u8. */
const RUN_PREFIX_BYTES = 9;

/**
 * Splits a digest table (page `first` onwards) into HAVE or VERIFY_REQUEST
 * frames that each fit maxFrameBytes. The last one is marked final. The
 * frames view `digests`; do not change it until they are written.
 */
export function digestRunFrames<T extends 'have' | 'verify-request'>(
  type: T,
  digests: BigUint64Array,
  options: { readonly first?: number; readonly maxFrameBytes?: number } = {},
): Array<T extends 'have' ? HaveFrame : VerifyRequestFrame> {
  const first = options.first ?? 0;
  const perFrame = Math.floor(((options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES) - HEADER_BYTES - RUN_PREFIX_BYTES) / 8);
  if (perFrame < 1) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'maxFrameBytes too small for one digest');
  const out: Array<HaveFrame | VerifyRequestFrame> = [];
  let at = 0;
  do {
    const n = Math.min(perFrame, digests.length - at);
    out.push({ type, first: first + at, digests: digests.subarray(at, at + n), final: at + n === digests.length } as HaveFrame | VerifyRequestFrame);
    at += n;
  } while (at < digests.length);
  return out as Array<T extends 'have' ? HaveFrame : VerifyRequestFrame>;
}

/**
 * Reassembles the chunks of one digest run sent for a whole image. Chunks must
 * arrive in order and be contiguous from page 0; the run is complete when the
 * final chunk arrives and covers exactly pageCount pages.
 */
export class DigestRunCollector {
  private readonly table: BigUint64Array;
  private next = 0;
  private complete = false;

  constructor(private readonly pageCount: number) {
    this.table = new BigUint64Array(pageCount);
  }

  /** Adds a chunk; returns the whole table once the final chunk is in, else undefined. */
  add(run: DigestRun): BigUint64Array | undefined {
    if (this.complete) throw new PresyncError(ErrorCodes.PROTOCOL, 'digest chunk after the final one');
    if (run.first !== this.next) throw new PresyncError(ErrorCodes.PROTOCOL, `digest chunk starts at page ${run.first}, expected ${this.next}`);
    if (run.first + run.digests.length > this.pageCount) {
      throw new PresyncError(ErrorCodes.PAGE_RANGE, `digest chunk runs past page count ${this.pageCount}`);
    }
    this.table.set(run.digests, run.first);
    this.next += run.digests.length;
    if (!run.final) return undefined;
    if (this.next !== this.pageCount) {
      throw new PresyncError(ErrorCodes.PROTOCOL, `final digest chunk ends at page ${this.next}, image has ${this.pageCount}`);
    }
    this.complete = true;
    return this.table;
  }
}

/** Pages whose digests differ, ascending, for the verify step. */
export function diffDigests(local: BigUint64Array, remote: BigUint64Array): Uint32Array {
  if (local.length !== remote.length) {
    throw new PresyncError(ErrorCodes.GEOMETRY, `digest tables differ in length: ${local.length} vs ${remote.length}`);
  }
  // The usual answer is "no difference": one memcmp instead of a BigInt per page.
  if (Buffer.from(local.buffer, local.byteOffset, local.byteLength).equals(Buffer.from(remote.buffer, remote.byteOffset, remote.byteLength))) {
    return new Uint32Array(0);
  }
  const diff: number[] = [];
  for (let i = 0; i < local.length; i++) if (local[i] !== remote[i]) diff.push(i);
  return Uint32Array.from(diff);
}

/** The VERIFY_RESPONSE for a list of mismatching pages (listing at most MAX_VERIFY_MISMATCHES). */
export function verifyResponse(mismatches: Uint32Array): VerifyResponseFrame {
  return {
    type: 'verify-response',
    match: mismatches.length === 0,
    mismatchCount: mismatches.length,
    mismatches: mismatches.slice(0, MAX_VERIFY_MISMATCHES),
  };
}

/**
 * SHA-256 of a digest table as u64 little-endian, page 0 first: the
 * VERIFY_SUMMARY. Hashed straight from the table's memory on little-endian
 * hosts (every one Node ships for but s390x).
 */
export function digestTableSummary(digests: BigUint64Array): Uint8Array {
  const h = createHash('sha256');
  if (endianness() === 'LE') {
    h.update(new Uint8Array(digests.buffer, digests.byteOffset, digests.byteLength));
  } else {
    const le = Buffer.alloc(digests.length * 8);
    for (let i = 0; i < digests.length; i++) le.writeBigUInt64LE(digests[i], i * 8);
    h.update(le);
  }
  return new Uint8Array(h.digest());
}

/** The VERIFY_SUMMARY frame for a digest table. */
export function verifySummary(digests: BigUint64Array): VerifySummaryFrame {
  return { type: 'verify-summary', pageCount: digests.length, sha256: digestTableSummary(digests) };
}

/** Whether a VERIFY_SUMMARY describes exactly this digest table. */
export function summaryMatches(f: VerifySummaryFrame, digests: BigUint64Array): boolean {
  return f.pageCount === digests.length && timingSafeEqual(f.sha256, digestTableSummary(digests));
}
