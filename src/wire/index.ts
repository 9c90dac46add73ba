/** presync wire protocol: a pure codec, no sockets. See docs/protocol.md. */
export * from './constants.ts';
export type * from './frames.ts';
export { crc32, crc32Table, hasNativeCrc32 } from './crc32.ts';
export { DEFAULT_PAGE_SIZE, ZERO_PAGE_DIGEST, digestPage, digestPages, initDigest, isDigestReady, isZeroPage, zeroPageDigest } from './digest.ts';
export { encodeFrame, encodeFrameParts, frameSize, type EncodeOptions } from './framing.ts';
export { FrameDecoder, type DecoderOptions } from './decoder.ts';
export { encodePayload, decodePayload } from './payload.ts';
export { deflateCodec, lz4Codec, localCodecCapabilities, type CodecName, type PageCodec } from './page-codecs.ts';
export {
  applyPageBatch,
  decodePage,
  decodePageBatch,
  encodePage,
  encodePages,
  maxPagesPerFrame,
  pagesFrame,
  pagesFrameBytes,
  type DecodedPage,
  type PageEncodeOptions,
} from './pages.ts';
export {
  ClientHandshake,
  ServerHandshake,
  MIN_SECRET_BYTES,
  computeClientProof,
  computeServerProof,
  errorFrame,
  errorFromFrame,
  proofsEqual,
  type ClientHandshakeOptions,
  type HandshakeResult,
  type HandshakeStep,
  type ServerHandshakeOptions,
} from './handshake.ts';
export { DigestRunCollector, diffDigests, digestRunFrames, digestTableSummary, summaryMatches, verifyResponse, verifySummary } from './digest-runs.ts';
