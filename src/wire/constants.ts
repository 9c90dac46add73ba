/** Protocol constants. Everything on the wire is little-endian. */

export const PROTOCOL_VERSION = 1;
/** "PSYN": first bytes of HELLO, so a stray client is recognised at once. */
export const MAGIC = 0x4e595350; // 'P','S','Y','N' read as u32 LE

/** version u8, type u8, flags u16, payloadLength u32, payloadCrc u32, headerCrc u32. */
export const HEADER_BYTES = 16;

export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** No configuration may go below this: a page batch of one 64 KiB page must fit. */
export const MIN_MAX_FRAME_BYTES = 64 * 1024 + 1024;
/**
 * Frame limit before the peer has authenticated: HELLO (at most ~520 B),
 * CHALLENGE, AUTH and ERROR (at most ~1.1 KiB) are small, so an
 * unauthenticated peer can never make the agent buffer more than this.
 */
export const HANDSHAKE_MAX_FRAME_BYTES = 4096;

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
export const MAX_IMAGE_ID_BYTES = 256;
export const MAX_SESSION_ID_BYTES = 128;
export const MAX_LINEAGE_ID_BYTES = 64;
export const MAX_ERROR_CODE_BYTES = 64;
export const MAX_MESSAGE_BYTES = 1024;
/** A VERIFY result lists at most this many mismatching pages; the total is still reported. */
export const MAX_VERIFY_MISMATCHES = 4096;
export const MAX_PAGE_SIZE = 1 << 24;
/** u32 page indices; the count is capped so index pageCount-1 still fits. */
export const MAX_PAGE_COUNT = 0xffffffff;

export const FrameType = {
  HELLO: 0x01,
  CHALLENGE: 0x02,
  AUTH: 0x03,
  WELCOME: 0x04,
  ERROR: 0x05,
  PAGES: 0x10,
  ACK: 0x11,
  HAVE: 0x12,
  PHASE: 0x13,
  VERIFY_REQUEST: 0x14,
  VERIFY_RESPONSE: 0x15,
  DEVICE_STATE: 0x16,
  HANDOVER: 0x17,
  HANDOVER_DONE: 0x18,
  ABORT: 0x19,
  PING: 0x1a,
  PONG: 0x1b,
  VERIFY_SUMMARY: 0x1c,
  VERIFY_SUMMARY_RESPONSE: 0x1d,
} as const;
export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType];

/** How one page travels inside a PAGES frame. */
export const PageEncoding = {
  ZERO: 0,
  RAW: 1,
  DEFLATE: 2,
  LZ4: 3,
  /** Reserved: zstd-napi has no prebuilt binary in its npm package, so no build emits it yet. */
  ZSTD: 4,
} as const;
export type PageEncodingCode = (typeof PageEncoding)[keyof typeof PageEncoding];

/** Capability bits carried in HELLO/CHALLENGE/WELCOME. Unknown bits are preserved and ignored. */
export const Capability = {
  DEFLATE: 1 << 0,
  LZ4: 1 << 1,
  ZSTD: 1 << 2,
  RESUME: 1 << 16,
  /** Target: accepts extra data connections joining a session (multi-stream sync). */
  STREAMS: 1 << 17,
  /** HELLO: this connection joins the session named by its sessionId as a data stream. */
  JOIN: 1 << 18,
  /** Verify by one SHA-256 of the digest table (VERIFY_SUMMARY) before sending the table itself. */
  VERIFY_SUMMARY: 1 << 19,
  /** The source accepts HAVE frames during presync: pages the target found damaged in its file, to resend. */
  REVERIFY: 1 << 20,
  /** HELLO only: a lineage id (str8) follows the sessionId. */
  LINEAGE: 1 << 21,
  /** HELLO (and WELCOME): the image is several files; their ids and page counts follow the lineage id. */
  SEGMENTS: 1 << 22,
} as const;

/** VERIFY_SUMMARY: SHA-256 of the digest table. */
export const VERIFY_SUMMARY_BYTES = 32;

export const PHASES = ['presync', 'launched', 'final-copy', 'verify', 'handover'] as const;
export type WirePhase = (typeof PHASES)[number];

/** Bytes before each page's payload in a PAGES frame: index u32, digest u64, encoding u8, length u32. */
export const PAGE_RECORD_HEADER_BYTES = 17;
/** Bytes before the page records: seq u64, count u32. */
export const PAGES_PREFIX_BYTES = 12;
