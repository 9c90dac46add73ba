/**
 * Adapts a Node Duplex (TCP socket, TLS socket, in-memory end) to Connection.
 *
 * Reads use the stream's paused mode (`read()` on 'readable'), so bytes are
 * only taken from the peer as fast as the Connection's reader asks: that is
 * the reader's backpressure. Writes resolve on 'drain' once `write()` says
 * the buffer is over its high-water mark: that is the writer's.
 */
import type { Duplex } from 'node:stream';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { publishClose } from './events.ts';
import type { Connection } from './types.ts';

export interface StreamConnectionOptions {
  /** Transport name, for events. */
  readonly transport: string;
  readonly remote: string;
  /**
   * Tears the stream down so that the peer sees an error rather than a clean
   * end (a TCP RST). Defaults to `stream.destroy()`.
   */
  readonly abort?: () => void;
}

const DEFAULT_LINGER_MS = 5000;

export class StreamConnection implements Connection {
  readonly remote: string;
  readonly closed: Promise<PresyncError | undefined>;

  readonly #stream: Duplex;
  readonly #transport: string;
  readonly #abort: () => void;
  #bytesRead = 0;
  #bytesWritten = 0;
  /** The error that ended the connection: what `closed` reports. */
  #failure: PresyncError | undefined;
  /** What operations reject with after a local destroy() without an error. */
  #destroyedLocally: PresyncError | undefined;
  #readEnded = false;
  #isClosed = false;
  #writeClosed = false;
  #discarding = false;
  #waiters = new Set<() => void>();
  #readChain: Promise<unknown> = Promise.resolve();

  constructor(stream: Duplex, options: StreamConnectionOptions) {
    this.#stream = stream;
    this.#transport = options.transport;
    this.remote = options.remote;
    this.#abort = options.abort ?? (() => stream.destroy());
    let resolveClosed!: (e: PresyncError | undefined) => void;
    this.closed = new Promise((r) => (resolveClosed = r));

    const wake = (): void => {
      if (this.#discarding) this.#discard();
      const ws = [...this.#waiters];
      this.#waiters.clear();
      for (const w of ws) w();
    };
    stream.on('readable', wake);
    stream.on('drain', wake);
    stream.on('finish', wake);
    stream.on('end', () => {
      this.#readEnded = true;
      wake();
    });
    stream.on('error', (err: Error) => {
      this.#failure ??= mapStreamError(err, this.remote);
      wake();
    });
    stream.on('close', () => {
      this.#isClosed = true;
      wake();
      publishClose({
        transport: this.#transport,
        remote: this.remote,
        bytesRead: this.#bytesRead,
        bytesWritten: this.#bytesWritten,
        ...(this.#failure ? { errorCode: this.#failure.code, errorMessage: this.#failure.message } : {}),
      });
      resolveClosed(this.#failure);
    });
    // A stream that was already closed before we attached would never settle `closed`.
    if (stream.destroyed) {
      queueMicrotask(() => {
        if (!this.#isClosed) {
          this.#isClosed = true;
          resolveClosed(this.#failure);
        }
      });
    }
  }

  get bytesRead(): number {
    return this.#bytesRead;
  }

  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  get writableLength(): number {
    return this.#stream.writableLength;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.#throwIfBroken('write');
    if (this.#writeClosed) {
      throw new PresyncError(ErrorCodes.CONNECTION, `write after close on connection to ${this.remote}`);
    }
    if (!(chunk instanceof Uint8Array)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'Connection.write expects a Uint8Array');
    }
    if (chunk.byteLength === 0) return;
    const ok = this.#stream.write(chunk);
    this.#bytesWritten += chunk.byteLength;
    if (ok) return;
    await this.#until(() => !this.#stream.writableNeedDrain, 'write');
  }

  read(): Promise<Uint8Array | null> {
    const next = this.#readChain.then(() => this.#readOne());
    this.#readChain = next.catch(() => undefined);
    return next;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const chunk = await this.read();
      if (chunk === null) return;
      yield chunk;
    }
  }

  async closeWrite(): Promise<void> {
    if (!this.#writeClosed) {
      this.#throwIfBroken('close');
      this.#writeClosed = true;
      this.#stream.end();
    }
    await this.#until(() => this.#stream.writableFinished, 'close');
  }

  async close(options: { lingerMs?: number } = {}): Promise<void> {
    if (this.#isClosed) return;
    try {
      await this.closeWrite();
    } catch {
      // Already broken: `closed` carries the reason; nothing is left to flush.
      this.destroy();
      return;
    }
    if (!this.#isClosed && !this.#discarding) {
      // The caller is done with this connection: unread input is dropped so
      // the peer's end can reach us and the stream can close itself. We do
      // not wait for that; a peer that never closes is cut after the linger.
      this.#discarding = true;
      this.#discard();
      for (const w of [...this.#waiters]) w();
      const timer = setTimeout(() => this.destroy(), options.lingerMs ?? DEFAULT_LINGER_MS);
      timer.unref();
      void this.closed.then(() => clearTimeout(timer));
    }
  }

  destroy(err?: Error): void {
    if (this.#isClosed || this.#destroyedLocally) return;
    const cause = err === undefined ? undefined : toConnectionError(err);
    if (cause) this.#failure ??= cause;
    this.#destroyedLocally = cause ?? new PresyncError(ErrorCodes.CONNECTION, `connection to ${this.remote} was destroyed locally`);
    this.#abort();
    for (const w of [...this.#waiters]) w();
    this.#waiters.clear();
  }

  async #readOne(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.#discarding) return null;
      this.#throwIfBroken('read');
      const chunk: unknown = this.#stream.read();
      if (chunk !== null) {
        const bytes = chunk as Uint8Array;
        this.#bytesRead += bytes.byteLength;
        return bytes;
      }
      if (this.#readEnded) return null;
      if (this.#isClosed) {
        throw new PresyncError(ErrorCodes.CONNECTION, `connection to ${this.remote} closed before the peer finished sending`);
      }
      await new Promise<void>((resolve) => this.#waiters.add(resolve));
    }
  }

  #discard(): void {
    while (this.#stream.read() !== null) {
      // Dropping: the user closed and will never read these.
    }
  }

  #throwIfBroken(op: string): void {
    const e = this.#failure ?? this.#destroyedLocally;
    if (e) throw e;
    if (this.#isClosed && op !== 'read') {
      throw new PresyncError(ErrorCodes.CONNECTION, `connection to ${this.remote} is closed`);
    }
  }

  /** Waits for `done()`, failing if the connection breaks first. */
  async #until(done: () => boolean, op: string): Promise<void> {
    for (;;) {
      this.#throwIfBroken(op);
      if (done()) return;
      if (this.#isClosed || this.#stream.destroyed) {
        throw new PresyncError(ErrorCodes.CONNECTION, `connection to ${this.remote} closed during ${op}`);
      }
      await new Promise<void>((resolve) => this.#waiters.add(resolve));
    }
  }
}

export function toConnectionError(err: Error): PresyncError {
  if (err instanceof PresyncError) return err;
  return new PresyncError(ErrorCodes.CONNECTION, err.message, { cause: err });
}

/** Turns a socket error into a PresyncError whose message says what happened. */
export function mapStreamError(err: Error, remote: string): PresyncError {
  if (err instanceof PresyncError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== undefined && isTlsAuthCode(code)) {
    return new PresyncError(ErrorCodes.AUTH, `${remote}: TLS authentication failed: ${err.message} (${code}); check cert, key and ca on both sides`, {
      cause: err,
    });
  }
  let what: string;
  switch (code) {
    case 'ECONNRESET':
      what = 'connection reset by peer';
      break;
    case 'EPIPE':
      what = 'peer closed the connection while we were writing';
      break;
    case 'ETIMEDOUT':
      what = 'connection timed out (peer unreachable)';
      break;
    case 'ECONNREFUSED':
      what = 'connection refused (nothing listening there?)';
      break;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      what = 'peer unreachable';
      break;
    default:
      what = err.message;
  }
  return new PresyncError(ErrorCodes.CONNECTION, `${remote}: ${what}${code && what !== err.message ? ` (${code})` : ''}`, {
    cause: err,
  });
}

const CERT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function isTlsAuthCode(code: string): boolean {
  // OpenSSL alerts about certificates (unknown CA, certificate required, bad cert) mean auth, not transport.
  return CERT_CODES.has(code) || (code.startsWith('ERR_SSL_') && code.includes('CERT'));
}
