import type { SegmentSpec } from '../core/image-layout.ts';
import type { PageEncodingCode, WirePhase } from './constants.ts';

/** One page as carried on the wire: still encoded, not yet validated against an image. */
export interface PageRecord {
  readonly index: number;
  /** XXH64 of the page's decoded bytes. */
  readonly digest: bigint;
  readonly encoding: PageEncodingCode;
  /** Encoded bytes: empty for ZERO, pageSize bytes for RAW, compressed otherwise. */
  readonly payload: Uint8Array;
}

export interface HelloFrame {
  readonly type: 'hello';
  readonly version: number;
  readonly capabilities: number;
  readonly pageSize: number;
  readonly pageCount: number;
  readonly imageId: string;
  readonly sessionId: string;
  readonly nonce: Uint8Array;
  /** The source's migration lineage (random, hex); on the wire only with the LINEAGE capability bit. */
  readonly lineageId?: string;
  /** The image's files in page order (ids and page counts summing to pageCount); on the wire only with the SEGMENTS bit. */
  readonly segments?: readonly SegmentSpec[];
}

export interface ChallengeFrame {
  readonly type: 'challenge';
  readonly version: number;
  readonly capabilities: number;
  /** 0 and 0 when the server has no image yet and will adopt the client's geometry. */
  readonly pageSize: number;
  readonly pageCount: number;
  readonly nonce: Uint8Array;
  /** HMAC proving the server knows the secret, bound to this HELLO and this challenge. */
  readonly proof: Uint8Array;
}

export interface AuthFrame {
  readonly type: 'auth';
  readonly proof: Uint8Array;
}

export interface WelcomeFrame {
  readonly type: 'welcome';
  /** Negotiated: the intersection of both sides' capabilities. */
  readonly capabilities: number;
  /** True when the target holds an earlier copy of this image and will send HAVE frames. */
  readonly resume: boolean;
}

export interface ErrorFrame {
  readonly type: 'error';
  readonly code: string;
  readonly message: string;
}

export interface PagesFrame {
  readonly type: 'pages';
  readonly seq: number;
  readonly pages: readonly PageRecord[];
}

export interface AckFrame {
  readonly type: 'ack';
  /** Every PAGES batch with seq <= this is applied and persisted on the target. */
  readonly seq: number;
}

/** A run of consecutive page digests, chunked over several frames for big images. */
export interface DigestRun {
  readonly first: number;
  readonly digests: BigUint64Array;
  /** Set on the run's last chunk. */
  readonly final: boolean;
}

export interface HaveFrame extends DigestRun {
  readonly type: 'have';
}

export interface VerifyRequestFrame extends DigestRun {
  readonly type: 'verify-request';
}

export interface VerifyResponseFrame {
  readonly type: 'verify-response';
  readonly match: boolean;
  /** Number of mismatching pages in total. */
  readonly mismatchCount: number;
  /** The first (at most MAX_VERIFY_MISMATCHES) mismatching page indices, ascending. */
  readonly mismatches: Uint32Array;
}

/**
 * The source's whole digest table in 32 bytes: SHA-256 over every page's
 * digest as u64 little-endian, page 0 first. Equal summaries mean equal
 * tables; only when they differ does the table itself cross the wire.
 */
export interface VerifySummaryFrame {
  readonly type: 'verify-summary';
  readonly pageCount: number;
  readonly sha256: Uint8Array;
}

export interface VerifySummaryResponseFrame {
  readonly type: 'verify-summary-response';
  readonly match: boolean;
}

export interface PhaseFrame {
  readonly type: 'phase';
  readonly phase: WirePhase;
}

export interface DeviceStateFrame {
  readonly type: 'device-state';
  readonly totalLength: number;
  readonly offset: number;
  readonly data: Uint8Array;
}

export interface HandoverFrame {
  readonly type: 'handover';
}

export interface HandoverDoneFrame {
  readonly type: 'handover-done';
}

export interface AbortFrame {
  readonly type: 'abort';
  readonly reason: string;
}

export interface PingFrame {
  readonly type: 'ping';
  readonly nonce: bigint;
}

export interface PongFrame {
  readonly type: 'pong';
  readonly nonce: bigint;
}

export type Frame =
  | HelloFrame
  | ChallengeFrame
  | AuthFrame
  | WelcomeFrame
  | ErrorFrame
  | PagesFrame
  | AckFrame
  | HaveFrame
  | VerifyRequestFrame
  | VerifyResponseFrame
  | VerifySummaryFrame
  | VerifySummaryResponseFrame
  | PhaseFrame
  | DeviceStateFrame
  | HandoverFrame
  | HandoverDoneFrame
  | AbortFrame
  | PingFrame
  | PongFrame;

export type FrameKind = Frame['type'];
