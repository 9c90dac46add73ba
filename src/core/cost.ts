/**
 * Wire-cost model shared by the simulator and the planners. The real engine
 * measures actual bytes; these constants mirror the wire format's framing
 * (docs/protocol.md) closely enough for planning.
 */
export interface WireCostModel {
  /** Per-page record header: index, encoding, digest, length. */
  readonly pageHeaderBytes: number;
  /** Per-frame overhead: length prefix, type, sequence, CRC. */
  readonly frameHeaderBytes: number;
  /** Pages per page-batch frame. */
  readonly pagesPerFrame: number;
}

export const DEFAULT_WIRE_COST: WireCostModel = {
  // docs/protocol.md: a page record is index, digest, encoding and length
  // (17 bytes) before its payload; a PAGES frame adds its 16-byte header,
  // sequence and count (28 bytes).
  pageHeaderBytes: 17,
  frameHeaderBytes: 28,
  pagesPerFrame: 64,
};

/** Wire bytes for a batch of pages, `zero` of which are elided zero pages. */
export function batchWireBytes(pages: number, zero: number, pageSize: number, m: WireCostModel = DEFAULT_WIRE_COST): number {
  if (pages <= 0) return 0;
  const frames = Math.ceil(pages / m.pagesPerFrame);
  return frames * m.frameHeaderBytes + pages * m.pageHeaderBytes + (pages - zero) * pageSize;
}

/** Average wire bytes of one non-zero page, framing included. */
export function fullPageWireBytes(pageSize: number, m: WireCostModel = DEFAULT_WIRE_COST): number {
  return pageSize + m.pageHeaderBytes + m.frameHeaderBytes / m.pagesPerFrame;
}
