/**
 * TLS transport (node:tls) over our own TCP sockets.
 *
 * Mutual TLS: a listener given `ca` requires every client to present a
 * certificate signed by it; a dialer given `ca` accepts only servers signed by
 * it, and presents its own `cert`/`key` if given. A client the listener
 * rejects is reset (TCP RST) right after the handshake and never reaches the
 * handler; it sees its first read fail, or end at once (with TLS 1.3 the RST
 * can land behind unread session tickets, which libuv reports as EOF), and
 * never receives application data. Rejections are published on
 * `presync:transport:handshake-failed`.
 *
 * We keep a handle on the raw TCP socket under each TLS socket because only a
 * raw socket can send an RST: that is how `destroy()` reaches the peer as an
 * error instead of looking like a graceful close.
 */
import type net from 'node:net';
import tls from 'node:tls';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { checkAddress, formatAddress } from './address.ts';
import { signalError, withDeadline } from './deadline.ts';
import { publishHandshakeFailed, publishOpen } from './events.ts';
import { mapStreamError, StreamConnection } from './stream-connection.ts';
import {
  bindServer,
  connectTcp,
  remoteOf,
  resetSocket,
  ServerListener,
  socketTuning,
  tuneSocket,
  type SocketTuning,
  type TcpTransportOptions,
} from './tcp.ts';
import type { Connection, ConnectionHandler, DialOptions, Listener, Transport, TransportAddress } from './types.ts';

type Pem = string | Buffer;

export interface TlsTransportOptions extends TcpTransportOptions {
  /** Our certificate chain (PEM). Required to listen; presented to servers when dialing if given. */
  readonly cert?: Pem;
  /** Private key for `cert` (PEM). */
  readonly key?: Pem;
  /** Trusted CA(s) (PEM). Listening: require client certs signed by it. Dialing: trust only it. */
  readonly ca?: Pem | Pem[];
  /** Listening: require a client certificate. Defaults to true when `ca` is given. */
  readonly requireClientCert?: boolean;
  /** Dialing: name to verify the server certificate against, if not the dialed host. */
  readonly servername?: string;
  /** Listening: drop clients that do not finish the handshake within this time (default 10 s). */
  readonly handshakeTimeoutMs?: number;
}

export class TlsTransport implements Transport {
  readonly name = 'tls';
  readonly #opts: TlsTransportOptions;
  readonly #tuning: SocketTuning;

  constructor(options: TlsTransportOptions) {
    if ((options.cert === undefined) !== (options.key === undefined)) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'tls: cert and key must be given together');
    }
    this.#opts = options;
    this.#tuning = socketTuning(options);
  }

  async listen(address: TransportAddress, onConnection: ConnectionHandler): Promise<Listener> {
    checkAddress(address);
    const o = this.#opts;
    if (o.cert === undefined || o.key === undefined) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'tls: a listener needs cert and key');
    }
    const requireClientCert = o.requireClientCert ?? o.ca !== undefined;
    if (requireClientCert && o.ca === undefined) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'tls: requireClientCert needs a ca to check client certificates against');
    }
    let server: tls.Server;
    try {
      server = tls.createServer({
        cert: o.cert,
        key: o.key,
        ...(o.ca !== undefined ? { ca: o.ca } : {}),
        requestCert: requireClientCert,
        // We check `authorized` ourselves so a rejected client gets an RST, not a clean FIN.
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
        handshakeTimeout: o.handshakeTimeoutMs ?? 10_000,
        allowHalfOpen: true,
        highWaterMark: this.#tuning.highWaterMark,
      });
    } catch (e) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `tls: bad cert, key or ca: ${(e as Error).message}`, { cause: e });
    }
    const bound = await bindServer(server, address, 'tls');
    const listener = new ServerListener(server, bound);
    const raws = new Map<string, net.Socket>();
    const keyOf = (s: net.Socket): string => `${s.remoteAddress}|${s.remotePort}`;

    server.on('connection', (raw: net.Socket) => {
      tuneSocket(raw, this.#tuning);
      const k = keyOf(raw);
      raws.set(k, raw);
      raw.once('close', () => {
        if (raws.get(k) === raw) raws.delete(k);
      });
    });
    server.on('tlsClientError', (err: Error, sock: tls.TLSSocket) => {
      publishHandshakeFailed({ transport: this.name, remote: remoteOf(sock), errorMessage: err.message });
    });
    server.on('secureConnection', (sock: tls.TLSSocket) => {
      const raw = raws.get(keyOf(sock));
      const abort = (): void => abortTls(sock, raw);
      if (requireClientCert && !sock.authorized) {
        sock.on('error', () => undefined);
        publishHandshakeFailed({
          transport: this.name,
          remote: remoteOf(sock),
          errorMessage: `client certificate rejected: ${String(sock.authorizationError ?? 'none presented')}`,
        });
        abort();
        return;
      }
      const conn = new StreamConnection(sock, { transport: this.name, remote: remoteOf(sock), abort });
      listener.accept(conn, this.name, onConnection);
    });
    return listener;
  }

  async dial(address: TransportAddress, options?: DialOptions): Promise<Connection> {
    checkAddress(address);
    const what = `dial tls ${formatAddress(address)}`;
    const { sock, raw } = await withDeadline(what, options, async (signal) => {
      const raw = await connectTcp(address, this.#tuning, signal);
      return { sock: await this.#handshake(raw, address, signal, what), raw };
    });
    const conn = new StreamConnection(sock, {
      transport: this.name,
      remote: remoteOf(raw),
      abort: () => abortTls(sock, raw),
    });
    publishOpen({ transport: this.name, role: 'dial', remote: conn.remote });
    return conn;
  }

  #handshake(raw: net.Socket, address: TransportAddress, signal: AbortSignal, what: string): Promise<tls.TLSSocket> {
    const o = this.#opts;
    return new Promise((resolve, reject) => {
      let sock: tls.TLSSocket;
      try {
        // highWaterMark is honoured by TLSSocket at runtime; @types/node omits it.
        const opts: tls.ConnectionOptions & { highWaterMark: number } = {
          socket: raw,
          host: address.host,
          ...(o.servername !== undefined ? { servername: o.servername } : {}),
          ...(o.ca !== undefined ? { ca: o.ca } : {}),
          ...(o.cert !== undefined ? { cert: o.cert, key: o.key } : {}),
          minVersion: 'TLSv1.2',
          rejectUnauthorized: true,
          highWaterMark: this.#tuning.highWaterMark,
        };
        sock = tls.connect(opts);
      } catch (e) {
        raw.destroy();
        reject(new PresyncError(ErrorCodes.BAD_ARGUMENT, `tls: bad cert, key or ca: ${(e as Error).message}`, { cause: e }));
        return;
      }
      const cleanup = (): void => {
        sock.off('secureConnect', onSecure);
        sock.off('error', onError);
        signal.removeEventListener('abort', onAbort);
      };
      const onSecure = (): void => {
        cleanup();
        resolve(sock);
      };
      const onError = (err: Error): void => {
        cleanup();
        sock.destroy();
        raw.destroy();
        reject(mapStreamError(err, what));
      };
      const onAbort = (): void => {
        cleanup();
        sock.on('error', () => undefined);
        sock.destroy();
        raw.destroy();
        reject(signalError(signal, what));
      };
      sock.once('secureConnect', onSecure);
      sock.once('error', onError);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/**
 * Resets the TCP socket under a TLS socket. Deferred to a fresh macrotask:
 * tearing the TCP handle out from under TLSWrap while OpenSSL is still on the
 * stack (e.g. from a handshake or read callback) crashes node (SIGSEGV).
 * StreamConnection fails pending operations at once, so the delay is invisible.
 */
function abortTls(sock: tls.TLSSocket, raw: net.Socket | undefined): void {
  setImmediate(() => {
    if (raw) resetSocket(raw);
    sock.destroy();
  });
}
