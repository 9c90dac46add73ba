/**
 * One place that turns DialOptions (caller's AbortSignal + timeoutMs) into a
 * single internal signal whose `reason` is already the PresyncError to throw.
 */
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { DialOptions } from './types.ts';

export async function withDeadline<T>(
  what: string,
  options: DialOptions | undefined,
  attempt: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const timeoutMs = options?.timeoutMs;
  if (timeoutMs !== undefined && !(timeoutMs >= 0 && Number.isFinite(timeoutMs))) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `timeoutMs must be a finite number >= 0, got ${timeoutMs}`);
  }
  const outer = options?.signal;
  if (outer?.aborted) throw abortedError(what, outer.reason);

  const ctl = new AbortController();
  const onOuterAbort = (): void => ctl.abort(abortedError(what, outer?.reason));
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  const timer =
    timeoutMs === undefined
      ? undefined
      : setTimeout(
          () => ctl.abort(new PresyncError(ErrorCodes.TIMEOUT, `${what}: no connection after ${timeoutMs} ms`)),
          timeoutMs,
        );
  try {
    return await attempt(ctl.signal);
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    outer?.removeEventListener('abort', onOuterAbort);
  }
}

function abortedError(what: string, reason: unknown): PresyncError {
  if (reason instanceof PresyncError) return reason;
  return new PresyncError(ErrorCodes.ABORTED, `${what}: aborted`, { cause: reason });
}

/** The PresyncError an aborted internal signal carries. */
export function signalError(signal: AbortSignal, what: string): PresyncError {
  const r: unknown = signal.reason;
  return r instanceof PresyncError ? r : new PresyncError(ErrorCodes.ABORTED, `${what}: aborted`, { cause: r });
}

/** Resolves after `ms` milliseconds, or at once when `signal` aborts. The one sleep of the code base. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
