import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { ErrorCodes, PeerReportedError, PresyncError, type ErrorCode } from '../core/errors.ts';
import type { SegmentSpec } from '../core/image-layout.ts';
import type { Geometry } from '../core/types.ts';
import { Capability, MAX_MESSAGE_BYTES, NONCE_BYTES, PROOF_BYTES, PROTOCOL_VERSION } from './constants.ts';
import type { AuthFrame, ChallengeFrame, ErrorFrame, Frame, HelloFrame, WelcomeFrame } from './frames.ts';
import { localCodecCapabilities } from './page-codecs.ts';
import { encodePayload } from './payload.ts';

/**
 * Mutual HMAC-SHA256 challenge-response over a shared secret:
 *
 *   client → HELLO     {geometry, imageId, sessionId, caps, nonceC}
 *   server → CHALLENGE {geometry?, caps, nonceS, proofS = HMAC(K, "server" ‖ HELLO ‖ CHALLENGE sans proof)}
 *   client → AUTH      {proofC = HMAC(K, "client" ‖ HELLO ‖ CHALLENGE)}
 *   server → WELCOME   {negotiated caps, resume}
 *
 * Proofs cover the exact payload bytes of both messages, so each one is bound
 * to both fresh nonces (a recorded AUTH is useless against a new nonceS) and to
 * the geometry and capabilities (a man in the middle cannot downgrade them).
 * The two labels differ, so a proof cannot be reflected back at its sender.
 * The secret itself never crosses the wire.
 */

const SERVER_LABEL = Buffer.from('presync/1 server proof\0');
const CLIENT_LABEL = Buffer.from('presync/1 client proof\0');
export const MIN_SECRET_BYTES = 16;

export interface HandshakeResult {
  readonly version: number;
  /** Capabilities both sides have (codec bits, RESUME). */
  readonly capabilities: number;
  readonly geometry: Geometry;
  readonly imageId: string;
  readonly sessionId: string;
  /** The source's migration lineage ('' from a source that sends none). */
  readonly lineageId: string;
  /** The target holds an earlier copy of this image; it will send HAVE frames next. */
  readonly resume: boolean;
  /** A data stream joining the session `sessionId` (multi-stream sync), not a session of its own. */
  readonly join: boolean;
  /** The source image's files (ids and page counts), when it is several; absent for one file. */
  readonly segments?: readonly SegmentSpec[];
}

export interface HandshakeStep {
  /** Frames to send to the peer, in order. */
  readonly send: Frame[];
  /** Set once the handshake has succeeded. */
  readonly result?: HandshakeResult;
}

/** A secret with fewer distinct byte values is refused as guessable (all zeros, one repeated character, …). */
export const MIN_SECRET_DISTINCT_BYTES = 8;

/**
 * Why a shared secret is too weak to use, or undefined: fewer than 16 bytes,
 * or fewer than 8 distinct byte values. (32 random bytes have ~30; a base64
 * or hex encoding of 16+ random bytes has at least 10 with overwhelming
 * probability.) A cheap floor against mistakes, not an entropy estimate.
 */
export function secretWeakness(secret: Uint8Array): string | undefined {
  if (secret.length < MIN_SECRET_BYTES) return `holds ${secret.length} bytes; at least ${MIN_SECRET_BYTES} are needed`;
  const seen = new Set<number>();
  for (const b of secret) {
    seen.add(b);
    if (seen.size >= MIN_SECRET_DISTINCT_BYTES) return undefined;
  }
  return `has only ${seen.size} distinct byte value${seen.size === 1 ? '' : 's'} (at least ${MIN_SECRET_DISTINCT_BYTES} are needed): it is guessable`;
}

/** Refuses a weak secret when an agent loads it (both agents call this). */
export function checkSecretStrength(secret: Uint8Array, what = 'the shared secret'): void {
  const why = secretWeakness(secret);
  if (why) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `${what} ${why}; make one with: head -c 32 /dev/urandom | base64 > secret`);
}

function checkSecret(secret: Uint8Array): void {
  if (!(secret instanceof Uint8Array) || secret.length < MIN_SECRET_BYTES) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `the shared secret must be at least ${MIN_SECRET_BYTES} bytes`);
  }
}

function hmac(secret: Uint8Array, label: Buffer, parts: readonly Uint8Array[]): Uint8Array {
  const h = createHmac('sha256', secret).update(label);
  for (const p of parts) {
    // Length-prefix each part so no two transcripts can serialise to the same bytes.
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(p.length, 0);
    h.update(len).update(p);
  }
  return new Uint8Array(h.digest());
}

function payloadBytes(frame: Frame): Buffer {
  return Buffer.concat(encodePayload(frame));
}

/** The server's proof for a HELLO and its CHALLENGE (the challenge's own proof field is ignored). */
export function computeServerProof(secret: Uint8Array, hello: HelloFrame, challenge: Omit<ChallengeFrame, 'proof'>): Uint8Array {
  checkSecret(secret);
  const full = payloadBytes({ ...challenge, proof: new Uint8Array(PROOF_BYTES) });
  return hmac(secret, SERVER_LABEL, [payloadBytes(hello), full.subarray(0, full.length - PROOF_BYTES)]);
}

/** The client's proof, over the HELLO it sent and the whole CHALLENGE it received. */
export function computeClientProof(secret: Uint8Array, hello: HelloFrame, challenge: ChallengeFrame): Uint8Array {
  checkSecret(secret);
  return hmac(secret, CLIENT_LABEL, [payloadBytes(hello), payloadBytes(challenge)]);
}

/** Constant-time comparison; false (not an exception) on a length mismatch. */
export function proofsEqual(expected: Uint8Array, received: Uint8Array): boolean {
  return expected.length === received.length && timingSafeEqual(expected, received);
}

const KNOWN_CODES = new Set<string>(Object.values(ErrorCodes));

/** The error a peer's ERROR frame stands for (its code when we know it, else PROTOCOL). */
export function errorFromFrame(frame: ErrorFrame): PresyncError {
  const code = KNOWN_CODES.has(frame.code) ? (frame.code as ErrorCode) : ErrorCodes.PROTOCOL;
  return new PeerReportedError(code, `peer reported ${frame.code}: ${frame.message}`);
}

function truncateUtf8(s: string, max: number): string {
  if (Buffer.byteLength(s) <= max) return s;
  let out = Buffer.from(s).subarray(0, max).toString('utf8');
  while (Buffer.byteLength(out) > max) out = out.slice(0, -1);
  return out;
}

/** An ERROR frame to tell the peer why we are closing. */
export function errorFrame(err: unknown): ErrorFrame {
  const e = err instanceof PresyncError ? err : new PresyncError(ErrorCodes.INTERNAL, err instanceof Error ? err.message : String(err));
  return { type: 'error', code: e.code, message: truncateUtf8(e.message, MAX_MESSAGE_BYTES) };
}

function unexpected(frame: Frame, state: string): PresyncError {
  if (frame.type === 'error') return errorFromFrame(frame);
  return new PresyncError(ErrorCodes.PROTOCOL, `unexpected ${frame.type} frame while ${state}`);
}

function freshNonce(given: Uint8Array | undefined): Uint8Array {
  if (given === undefined) return new Uint8Array(randomBytes(NONCE_BYTES));
  if (given.length !== NONCE_BYTES) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `nonce must be ${NONCE_BYTES} bytes`);
  return given;
}

const CODEC_BITS = Capability.DEFLATE | Capability.LZ4 | Capability.ZSTD;
/** Bits a server may grant: codecs, resume, multi-stream. */
const GRANTABLE = CODEC_BITS | Capability.RESUME | Capability.STREAMS | Capability.JOIN | Capability.VERIFY_SUMMARY | Capability.REVERIFY | Capability.SEGMENTS;

export interface ClientHandshakeOptions {
  readonly secret: Uint8Array;
  readonly geometry: Geometry;
  readonly imageId: string;
  readonly sessionId: string;
  /** The migration lineage (LINEAGE_ID_RE); sent with the LINEAGE bit. */
  readonly lineageId?: string;
  /** Default: the codecs this process can decode, plus RESUME. */
  readonly capabilities?: number;
  /** The image's files in page order, when it is several (sent with the SEGMENTS bit; a one-file image sends none, as before). */
  readonly segments?: readonly SegmentSpec[];
  /** Only for tests; a fresh random nonce otherwise. */
  readonly nonce?: Uint8Array;
}

/** A lineage id: 16 random bytes in lowercase hex. */
export const LINEAGE_ID_RE = /^[0-9a-f]{32}$/;

export function checkLineageId(id: string): void {
  if (!LINEAGE_ID_RE.test(id)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `a lineage id is 32 lowercase hex digits (16 random bytes), got ${JSON.stringify(id.slice(0, 40))}`);
}

/** The source agent's side (the one that connects). */
export class ClientHandshake {
  private state: 'init' | 'await-challenge' | 'await-welcome' | 'done' | 'failed' = 'init';
  private readonly helloFrame: HelloFrame;
  private challenge: ChallengeFrame | undefined;

  constructor(private readonly opts: ClientHandshakeOptions) {
    checkSecret(opts.secret);
    if (opts.lineageId !== undefined) checkLineageId(opts.lineageId);
    const offered = opts.capabilities ?? (localCodecCapabilities() | Capability.RESUME | Capability.STREAMS | Capability.VERIFY_SUMMARY | Capability.REVERIFY);
    const caps = opts.segments !== undefined ? offered | Capability.SEGMENTS : offered & ~Capability.SEGMENTS;
    this.helloFrame = {
      type: 'hello',
      version: PROTOCOL_VERSION,
      capabilities: opts.lineageId !== undefined ? caps | Capability.LINEAGE : caps & ~Capability.LINEAGE,
      ...(opts.lineageId !== undefined ? { lineageId: opts.lineageId } : {}),
      ...(opts.segments !== undefined ? { segments: opts.segments } : {}),
      pageSize: opts.geometry.pageSize,
      pageCount: opts.geometry.pageCount,
      imageId: opts.imageId,
      sessionId: opts.sessionId,
      nonce: freshNonce(opts.nonce),
    };
    encodePayload(this.helloFrame); // validates field bounds now, not at send time
  }

  /** The first frame to send. */
  start(): HandshakeStep {
    if (this.state !== 'init') throw new PresyncError(ErrorCodes.BAD_PHASE, 'client handshake already started');
    this.state = 'await-challenge';
    return { send: [this.helloFrame] };
  }

  receive(frame: Frame): HandshakeStep {
    try {
      return this.step(frame);
    } catch (e) {
      this.state = 'failed';
      throw e;
    }
  }

  private step(frame: Frame): HandshakeStep {
    if (this.state === 'await-challenge' && frame.type === 'challenge') {
      if (frame.version !== PROTOCOL_VERSION) {
        throw new PresyncError(ErrorCodes.VERSION, `server speaks protocol version ${frame.version}, this build ${PROTOCOL_VERSION}`);
      }
      const expected = computeServerProof(this.opts.secret, this.helloFrame, frame);
      if (!proofsEqual(expected, frame.proof) || Buffer.from(frame.nonce).equals(this.helloFrame.nonce)) {
        throw new PresyncError(ErrorCodes.AUTH, 'the server could not prove it knows the shared secret; check that both agents use the same secret');
      }
      const g = this.opts.geometry;
      if (frame.pageSize !== 0 && (frame.pageSize !== g.pageSize || frame.pageCount !== g.pageCount)) {
        throw new PresyncError(
          ErrorCodes.GEOMETRY,
          `target image is ${frame.pageCount}×${frame.pageSize} B pages, source is ${g.pageCount}×${g.pageSize} B; use a fresh target image`,
        );
      }
      this.challenge = frame;
      this.state = 'await-welcome';
      const auth: AuthFrame = { type: 'auth', proof: computeClientProof(this.opts.secret, this.helloFrame, frame) };
      return { send: [auth] };
    }
    if (this.state === 'await-welcome' && frame.type === 'welcome' && this.challenge) {
      const allowed = this.helloFrame.capabilities & this.challenge.capabilities;
      if ((frame.capabilities & ~allowed & GRANTABLE) !== 0) {
        throw new PresyncError(ErrorCodes.PROTOCOL, 'server granted capabilities that were not offered');
      }
      if (frame.resume && (frame.capabilities & Capability.RESUME) === 0) {
        throw new PresyncError(ErrorCodes.PROTOCOL, 'server resumes without the RESUME capability');
      }
      const join = (this.helloFrame.capabilities & Capability.JOIN) !== 0;
      if (join && (frame.capabilities & Capability.JOIN) === 0) {
        throw new PresyncError(ErrorCodes.PROTOCOL, 'the target does not accept joining data streams; use --streams 1');
      }
      if (join && frame.resume) throw new PresyncError(ErrorCodes.PROTOCOL, 'server resumes a joining data stream');
      if (this.opts.segments !== undefined && (frame.capabilities & Capability.SEGMENTS) === 0) {
        throw new PresyncError(ErrorCodes.VERSION, 'the target does not take an image of several files (its presync is older); upgrade the target agent');
      }
      this.state = 'done';
      return {
        send: [],
        result: {
          version: PROTOCOL_VERSION,
          capabilities: frame.capabilities,
          geometry: this.opts.geometry,
          imageId: this.opts.imageId,
          sessionId: this.opts.sessionId,
          lineageId: this.opts.lineageId ?? '',
          resume: frame.resume,
          join,
          ...(this.opts.segments !== undefined ? { segments: this.opts.segments } : {}),
        },
      };
    }
    throw unexpected(frame, `the client handshake is ${this.state}`);
  }
}

export interface ServerHandshakeOptions {
  readonly secret: Uint8Array;
  /** The target image's geometry, if it has one; otherwise the client's is adopted. */
  readonly geometry?: Geometry;
  /** Default: the codecs this process can decode, plus RESUME. */
  readonly capabilities?: number;
  /** Identity of the image the target already holds (from an earlier session), if any. */
  readonly heldImageId?: string;
  /** Its lineage: only a source of the same lineage resumes it. */
  readonly heldLineageId?: string;
  /** Its state: a handed-over (`valid`) image is never resumed. */
  readonly heldState?: 'syncing' | 'valid' | 'invalid';
  /** Only for tests; a fresh random nonce otherwise. */
  readonly nonce?: Uint8Array;
}

/** The target agent's side (the one that listens). One instance per connection. */
export class ServerHandshake {
  private state: 'await-hello' | 'await-auth' | 'done' | 'failed' = 'await-hello';
  private hello: HelloFrame | undefined;
  private challenge: ChallengeFrame | undefined;
  private readonly capabilities: number;
  private readonly nonce: Uint8Array;

  constructor(private readonly opts: ServerHandshakeOptions) {
    checkSecret(opts.secret);
    this.capabilities = opts.capabilities ?? (localCodecCapabilities() | Capability.RESUME | Capability.STREAMS | Capability.JOIN | Capability.VERIFY_SUMMARY | Capability.REVERIFY | Capability.SEGMENTS);
    this.nonce = freshNonce(opts.nonce);
  }

  receive(frame: Frame): HandshakeStep {
    try {
      return this.step(frame);
    } catch (e) {
      this.state = 'failed';
      throw e;
    }
  }

  private step(frame: Frame): HandshakeStep {
    if (this.state === 'await-hello' && frame.type === 'hello') {
      if (frame.version !== PROTOCOL_VERSION) {
        throw new PresyncError(ErrorCodes.VERSION, `client speaks protocol version ${frame.version}, this build ${PROTOCOL_VERSION}`);
      }
      if (frame.lineageId !== undefined && !LINEAGE_ID_RE.test(frame.lineageId)) throw new PresyncError(ErrorCodes.PROTOCOL, 'hello: the lineage id is not 32 lowercase hex digits');
      const g = this.opts.geometry;
      const core: Omit<ChallengeFrame, 'proof'> = {
        type: 'challenge',
        version: PROTOCOL_VERSION,
        capabilities: this.capabilities,
        pageSize: g?.pageSize ?? 0,
        pageCount: g?.pageCount ?? 0,
        nonce: this.nonce,
      };
      this.hello = frame;
      this.challenge = { ...core, proof: computeServerProof(this.opts.secret, frame, core) };
      this.state = 'await-auth';
      return { send: [this.challenge] };
    }
    if (this.state === 'await-auth' && frame.type === 'auth' && this.hello && this.challenge) {
      const hello = this.hello;
      if (!proofsEqual(computeClientProof(this.opts.secret, hello, this.challenge), frame.proof)) {
        throw new PresyncError(ErrorCodes.AUTH, 'the client could not prove it knows the shared secret (wrong secret or a replayed handshake)');
      }
      const g = this.opts.geometry;
      if (g && (g.pageSize !== hello.pageSize || g.pageCount !== hello.pageCount)) {
        throw new PresyncError(
          ErrorCodes.GEOMETRY,
          `source image is ${hello.pageCount}×${hello.pageSize} B pages, target holds ${g.pageCount}×${g.pageSize} B; use a fresh target image`,
        );
      }
      const join = (hello.capabilities & this.capabilities & Capability.JOIN) !== 0;
      // A joining stream resumes nothing: it belongs to a session that did.
      const capabilities = hello.capabilities & this.capabilities & GRANTABLE & (join ? ~Capability.RESUME : ~0);
      // Only the same lineage resumes, and never a handed-over image: a
      // second application with the same image id (same path and size) is
      // another lineage.
      const lineageId = hello.lineageId ?? '';
      const resume =
        !join &&
        (capabilities & Capability.RESUME) !== 0 &&
        g !== undefined &&
        this.opts.heldImageId !== undefined &&
        this.opts.heldImageId === hello.imageId &&
        lineageId !== '' &&
        this.opts.heldLineageId === lineageId &&
        this.opts.heldState !== 'valid';
      const welcome: WelcomeFrame = { type: 'welcome', capabilities, resume };
      this.state = 'done';
      return {
        send: [welcome],
        result: {
          version: PROTOCOL_VERSION,
          capabilities,
          geometry: { pageSize: hello.pageSize, pageCount: hello.pageCount },
          imageId: hello.imageId,
          sessionId: hello.sessionId,
          lineageId,
          resume,
          join,
          ...(hello.segments !== undefined ? { segments: hello.segments } : {}),
        },
      };
    }
    throw unexpected(frame, `the server handshake is ${this.state}`);
  }
}
