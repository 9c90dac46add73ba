/**
 * One transport interface, many implementations (TCP, TLS, in-memory, shaped),
 * all held to the same compliance suite, in the manner of js-libp2p.
 *
 * A Connection is an ordered, reliable byte stream (chunk boundaries are not
 * preserved) with backpressure in both directions:
 * - the writer awaits `write()`, which settles only once the chunk fits under
 *   the high-water mark, so a writer that awaits cannot buffer without bound;
 * - the reader pulls with `read()` (or `for await`), and nothing more is
 *   taken from the peer than the local buffers hold, so a slow reader slows
 *   the writer down instead of filling memory.
 */
import type { PresyncError } from '../core/errors.ts';

/** Where to listen or dial. Port 0 in `listen` means "pick a free one". */
export interface TransportAddress {
  readonly host: string;
  readonly port: number;
}

export interface DialOptions {
  /** Aborting rejects the dial with PRESYNC_ERR_ABORTED and tears down any half-open socket. */
  readonly signal?: AbortSignal;
  /** Gives up with PRESYNC_ERR_TIMEOUT if the connection (and handshake, if any) is not up by then. */
  readonly timeoutMs?: number;
}

export interface ListenerCloseOptions {
  /**
   * Also destroy the connections this listener accepted that are still open.
   * By default they are left alone: whoever received them owns them.
   */
  readonly destroyConnections?: boolean;
}

export interface Listener {
  /** The bound address: the real port when listening on port 0. */
  readonly address: TransportAddress;
  /** Stops accepting. Resolves once the address is free for reuse. */
  close(options?: ListenerCloseOptions): Promise<void>;
}

/** Called once per accepted connection. Errors it throws destroy that connection. */
export type ConnectionHandler = (conn: Connection) => void | Promise<void>;

export interface Connection extends AsyncIterable<Uint8Array> {
  /** Human-readable peer description, for logs and errors only. */
  readonly remote: string;

  /**
   * Queues a chunk. Resolves when the local buffer is back under its
   * high-water mark (immediately if it never went over); rejects with
   * PRESYNC_ERR_CONNECTION if the connection fails or was closed for writing.
   * The caller must not mutate `chunk` afterwards.
   */
  write(chunk: Uint8Array): Promise<void>;

  /**
   * Next chunk of incoming bytes, or null once the peer closed gracefully and
   * everything it sent has been read. Rejects with PRESYNC_ERR_CONNECTION if
   * the connection broke. Concurrent calls are served in call order.
   */
  read(): Promise<Uint8Array | null>;

  /**
   * Half-close: flushes every queued byte, then tells the peer no more will
   * come (its `read()` returns null after the last byte). Reading goes on.
   */
  closeWrite(): Promise<void>;

  /**
   * Graceful close: `closeWrite()`, then stops reading (unread input is
   * discarded). Resolves once our bytes are flushed; the connection finishes
   * closing when the peer closes too (see `closed`), or is destroyed if the
   * peer has not closed `lingerMs` (default 5000) later.
   */
  close(options?: { lingerMs?: number }): Promise<void>;

  /**
   * Abort at once: queued bytes are dropped, pending reads and writes reject,
   * and the peer sees an error (TCP: an RST), not a clean end. Idempotent.
   * Caveat for TCP/TLS: if the RST reaches a peer that still has unread bytes
   * from us, libuv may report it to that peer as a plain EOF. Protocols must
   * therefore never treat EOF as success without an explicit end message.
   */
  destroy(err?: Error): void;

  /**
   * Settles when the connection is fully closed: with undefined after a clean
   * close, or with the error that ended it. Never rejects.
   */
  readonly closed: Promise<PresyncError | undefined>;

  /** Bytes accepted by `write()` so far. */
  readonly bytesWritten: number;
  /** Bytes returned by `read()` so far. */
  readonly bytesRead: number;
  /** Bytes accepted by `write()` but still in local buffers (not yet handed to the OS or peer). */
  readonly writableLength: number;
}

export interface Transport {
  /** Short name for logs and metrics: 'tcp', 'tls', 'memory', 'shaped(tcp)'. */
  readonly name: string;
  listen(address: TransportAddress, onConnection: ConnectionHandler): Promise<Listener>;
  dial(address: TransportAddress, options?: DialOptions): Promise<Connection>;
}
