/** Plain TCP transport (node:net). */
import net from 'node:net';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { checkAddress, formatAddress } from './address.ts';
import { signalError, withDeadline } from './deadline.ts';
import { publishOpen } from './events.ts';
import { mapStreamError, StreamConnection } from './stream-connection.ts';
import type {
  Connection,
  ConnectionHandler,
  DialOptions,
  Listener,
  ListenerCloseOptions,
  Transport,
  TransportAddress,
} from './types.ts';

export interface TcpTransportOptions {
  /**
   * Per-socket buffer bound for both directions, bytes (default 256 KiB).
   * `write()` waits once this much is queued locally.
   */
  readonly highWaterMark?: number;
  /** TCP keepalive probe delay, ms (default 15 s); 0 disables keepalive. */
  readonly keepAliveMs?: number;
}

export const DEFAULT_HIGH_WATER_MARK = 256 * 1024;

export interface SocketTuning {
  readonly highWaterMark: number;
  readonly keepAliveMs: number;
}

export function socketTuning(o: TcpTransportOptions | undefined): SocketTuning {
  const hwm = o?.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
  const ka = o?.keepAliveMs ?? 15_000;
  if (!Number.isInteger(hwm) || hwm < 1) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `highWaterMark must be a positive integer, got ${hwm}`);
  }
  if (!(ka >= 0)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `keepAliveMs must be >= 0, got ${ka}`);
  return { highWaterMark: hwm, keepAliveMs: ka };
}

/** Frames are small and latency-sensitive: no Nagle; keepalive finds dead peers on idle links. */
export function tuneSocket(sock: net.Socket, t: SocketTuning): void {
  sock.setNoDelay(true);
  if (t.keepAliveMs > 0) sock.setKeepAlive(true, t.keepAliveMs);
}

/** Connects a raw TCP socket, honouring the deadline signal. */
export function connectTcp(address: TransportAddress, tuning: SocketTuning, signal: AbortSignal): Promise<net.Socket> {
  const what = `dial tcp ${formatAddress(address)}`;
  return new Promise((resolve, reject) => {
    // The stream high-water marks reach the socket's Duplex at runtime; @types/node omits them.
    const opts: net.NetConnectOpts & { readableHighWaterMark: number; writableHighWaterMark: number } = {
      host: address.host,
      port: address.port,
      allowHalfOpen: true,
      readableHighWaterMark: tuning.highWaterMark,
      writableHighWaterMark: tuning.highWaterMark,
    };
    const sock = net.connect(opts);
    const cleanup = (): void => {
      sock.off('connect', onConnect);
      sock.off('error', onError);
      signal.removeEventListener('abort', onAbort);
    };
    const onConnect = (): void => {
      cleanup();
      tuneSocket(sock, tuning);
      resolve(sock);
    };
    const onError = (err: Error): void => {
      cleanup();
      sock.destroy();
      reject(mapStreamError(err, what));
    };
    const onAbort = (): void => {
      cleanup();
      sock.on('error', () => undefined);
      sock.destroy();
      reject(signalError(signal, what));
    };
    sock.once('connect', onConnect);
    sock.once('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Sends an RST so the peer sees "connection reset" rather than a clean end. */
export function resetSocket(sock: net.Socket): void {
  if (sock.destroyed) return;
  try {
    sock.resetAndDestroy();
  } catch {
    // Not connected yet or no TCP handle: a plain destroy is the best we can do.
    sock.destroy();
  }
}

export function remoteOf(sock: net.Socket): string {
  const host = sock.remoteAddress ?? '?';
  const port = sock.remotePort ?? 0;
  return formatAddress({ host, port });
}

/** Binds a net.Server (or tls.Server) and reports the real address. */
export function bindServer(server: net.Server, address: TransportAddress, what: string): Promise<TransportAddress> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      const code = (err as NodeJS.ErrnoException).code;
      const hint = code === 'EADDRINUSE' ? ' (address already in use)' : code === 'EACCES' ? ' (permission denied)' : '';
      reject(new PresyncError(ErrorCodes.CONNECTION, `${what}: cannot listen on ${formatAddress(address)}${hint}: ${err.message}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen({ host: address.host, port: address.port }, () => {
      server.off('error', onError);
      const a = server.address();
      if (a === null || typeof a === 'string') {
        reject(new PresyncError(ErrorCodes.INTERNAL, `${what}: listener has no TCP address`));
        return;
      }
      resolve({ host: a.address, port: a.port });
    });
  });
}

/** Listener over a bound net.Server that remembers what it accepted. */
export class ServerListener implements Listener {
  readonly #server: net.Server;
  readonly #open = new Set<Connection>();
  #closing: Promise<void> | undefined;

  constructor(server: net.Server, readonly address: TransportAddress) {
    this.#server = server;
    // Errors after bind (e.g. EMFILE on accept) must not crash the process.
    server.on('error', () => undefined);
  }

  /** Hands an accepted connection to the user's handler. */
  accept(conn: Connection, transport: string, handler: ConnectionHandler): void {
    this.#open.add(conn);
    void conn.closed.then(() => this.#open.delete(conn));
    publishOpen({ transport, role: 'accept', remote: conn.remote });
    try {
      const r = handler(conn);
      if (r instanceof Promise) r.catch((e: unknown) => conn.destroy(e instanceof Error ? e : new Error(String(e))));
    } catch (e) {
      conn.destroy(e instanceof Error ? e : new Error(String(e)));
    }
  }

  close(options: ListenerCloseOptions = {}): Promise<void> {
    if (options.destroyConnections) for (const c of this.#open) c.destroy();
    this.#closing ??= new Promise<void>((resolve) => {
      if (!this.#server.listening) return resolve();
      // server.close() releases the port at once but only calls back when every
      // accepted socket is gone; we do not wait for those.
      this.#server.close();
      setImmediate(resolve);
    });
    return this.#closing;
  }
}

export class TcpTransport implements Transport {
  readonly name = 'tcp';
  readonly #tuning: SocketTuning;

  constructor(options?: TcpTransportOptions) {
    this.#tuning = socketTuning(options);
  }

  async listen(address: TransportAddress, onConnection: ConnectionHandler): Promise<Listener> {
    checkAddress(address);
    const tuning = this.#tuning;
    const server = net.createServer({
      allowHalfOpen: true,
      highWaterMark: tuning.highWaterMark,
    });
    const bound = await bindServer(server, address, 'tcp');
    const listener = new ServerListener(server, bound);
    server.on('connection', (sock: net.Socket) => {
      tuneSocket(sock, tuning);
      const conn = new StreamConnection(sock, { transport: this.name, remote: remoteOf(sock), abort: () => resetSocket(sock) });
      listener.accept(conn, this.name, onConnection);
    });
    return listener;
  }

  async dial(address: TransportAddress, options?: DialOptions): Promise<Connection> {
    checkAddress(address);
    const sock = await withDeadline(`dial tcp ${formatAddress(address)}`, options, (signal) =>
      connectTcp(address, this.#tuning, signal),
    );
    const conn = new StreamConnection(sock, { transport: this.name, remote: remoteOf(sock), abort: () => resetSocket(sock) });
    publishOpen({ transport: this.name, role: 'dial', remote: conn.remote });
    return conn;
  }
}
