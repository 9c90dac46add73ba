/**
 * Every failure presync expects carries a stable code so scripts can branch on
 * it and the CLI can print a one-line explanation instead of a stack trace.
 */
export const ErrorCodes = {
  BAD_ARGUMENT: 'PRESYNC_ERR_BAD_ARGUMENT',
  BAD_TRACE: 'PRESYNC_ERR_BAD_TRACE',
  BAD_PHASE: 'PRESYNC_ERR_BAD_PHASE',
  BAD_POLICY: 'PRESYNC_ERR_BAD_POLICY',
  NO_CONVERGENCE: 'PRESYNC_ERR_NO_CONVERGENCE',
  AUTH: 'PRESYNC_ERR_AUTH',
  PROTOCOL: 'PRESYNC_ERR_PROTOCOL',
  FRAME_TOO_LARGE: 'PRESYNC_ERR_FRAME_TOO_LARGE',
  CHECKSUM: 'PRESYNC_ERR_CHECKSUM',
  VERSION: 'PRESYNC_ERR_VERSION',
  GEOMETRY: 'PRESYNC_ERR_GEOMETRY',
  PAGE_RANGE: 'PRESYNC_ERR_PAGE_RANGE',
  VERIFY: 'PRESYNC_ERR_VERIFY',
  CONNECTION: 'PRESYNC_ERR_CONNECTION',
  TIMEOUT: 'PRESYNC_ERR_TIMEOUT',
  IMAGE: 'PRESYNC_ERR_IMAGE',
  IMAGE_EXISTS: 'PRESYNC_ERR_IMAGE_EXISTS',
  BUSY: 'PRESYNC_ERR_BUSY',
  LOCKED: 'PRESYNC_ERR_LOCKED',
  QMP: 'PRESYNC_ERR_QMP',
  QEMU: 'PRESYNC_ERR_QEMU',
  /** A QEMU command line presync cannot start as a target (anonymous RAM, -incoming, …): bad usage, exit 2. */
  QEMU_CMDLINE: 'PRESYNC_ERR_QEMU_CMDLINE',
  GUEST: 'PRESYNC_ERR_GUEST',
  /** The guest process exited (or its pid now names another process) during the migration. */
  GUEST_GONE: 'PRESYNC_ERR_GUEST_GONE',
  /** The source image changed size during the migration. */
  IMAGE_SIZE: 'PRESYNC_ERR_IMAGE_SIZE',
  ABORTED: 'PRESYNC_ERR_ABORTED',
  HANDOVER_IN_DOUBT: 'PRESYNC_ERR_HANDOVER_IN_DOUBT',
  HANDOVER_HOOK: 'PRESYNC_ERR_HANDOVER_HOOK',
  /** A disk mirror (non-shared storage) failed or could not start; the source keeps its disk. */
  DISK_MIRROR: 'PRESYNC_ERR_DISK_MIRROR',
  /** The target's disk differs from the source's at the switchover (--verify-disk). */
  DISK_VERIFY: 'PRESYNC_ERR_DISK_VERIFY',
  INTERNAL: 'PRESYNC_ERR_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

const KNOWN_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCodes));

export class PresyncError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PresyncError';
    this.code = code;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/**
 * An error the peer reported in an ERROR frame (not one seen locally, such as
 * a lost connection). After HANDOVER the difference matters: a target that
 * answers with ERROR has not started the guest, a silent one may have.
 */
export class PeerReportedError extends PresyncError {}

/**
 * A JSON.parse failure, described without quoting the input: Node's message
 * quotes the first bytes, and the input may be a secret file passed by
 * mistake. Only the byte position survives, when the message has one.
 */
export function describeJsonError(e: unknown): string {
  const m = e instanceof Error ? /position (\d+)/.exec(e.message) : null;
  return m ? `not valid JSON (error at byte ${m[1]})` : 'not valid JSON';
}

export function isPresyncError(e: unknown): e is PresyncError {
  return e instanceof PresyncError;
}

/** Wraps anything thrown into a PresyncError, keeping a known code. */
export function toPresyncError(e: unknown, fallback: ErrorCode = ErrorCodes.INTERNAL): PresyncError {
  if (e instanceof PresyncError) return e;
  // The native page hasher throws plain errors carrying one of our codes (e.g. PRESYNC_ERR_IMAGE_SIZE).
  const code = e instanceof Error ? (e as Error & { code?: unknown }).code : undefined;
  if (typeof code === 'string' && KNOWN_CODES.has(code)) return new PresyncError(code as ErrorCode, e instanceof Error ? e.message : String(e), { cause: e });
  const msg = e instanceof Error ? e.message : String(e);
  return new PresyncError(fallback, msg, { cause: e });
}
