/**
 * In-memory transport: connected Duplex pairs inside one process, with the
 * same backpressure as a socket. A writer's chunk moves to the peer's read
 * buffer; once that buffer is over its high-water mark the write is held
 * until the peer reads, so a slow reader stalls the writer exactly as a full
 * TCP window would. Chunks are copied, so a writer may not alias the reader.
 */
import { Duplex } from 'node:stream';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { checkAddress, formatAddress } from './address.ts';
import { signalError, withDeadline } from './deadline.ts';
import { publishOpen } from './events.ts';
import { StreamConnection } from './stream-connection.ts';
import type {
  Connection,
  ConnectionHandler,
  DialOptions,
  Listener,
  ListenerCloseOptions,
  Transport,
  TransportAddress,
} from './types.ts';

export const DEFAULT_MEMORY_HIGH_WATER_MARK = 64 * 1024;

class MemoryEnd extends Duplex {
  peer!: MemoryEnd;
  /** Callback of our last write, held until the peer reads (our backpressure). */
  #heldWrite: ((err?: Error | null) => void) | null = null;

  constructor(highWaterMark: number) {
    super({ allowHalfOpen: true, readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const peer = this.peer;
    if (peer.destroyed) {
      cb(new PresyncError(ErrorCodes.CONNECTION, 'memory: peer is gone'));
      return;
    }
    if (peer.push(Buffer.from(chunk))) cb();
    else this.#heldWrite = cb;
  }

  override _read(): void {
    const p = this.peer;
    const cb = p.#heldWrite;
    if (cb) {
      p.#heldWrite = null;
      cb();
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.push(null);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#heldWrite = null;
    // A natural end (both directions done) is a clean close; anything else is
    // an abort, which the peer must see as a reset, like a TCP RST.
    const natural = this.writableFinished && this.readableEnded;
    if (!natural && !this.peer.destroyed) {
      this.peer.destroy(new PresyncError(ErrorCodes.CONNECTION, 'memory: connection reset by peer'));
    }
    cb(err);
  }
}

function duplexPair(highWaterMark: number): [MemoryEnd, MemoryEnd] {
  const a = new MemoryEnd(highWaterMark);
  const b = new MemoryEnd(highWaterMark);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

interface MemoryBinding {
  readonly handler: ConnectionHandler;
  readonly listener: MemoryListener;
}

/** A namespace of in-memory addresses. Transports sharing one can reach each other. */
export class MemoryNetwork {
  readonly #bindings = new Map<string, MemoryBinding>();
  #nextPort = 1;

  /** @internal */
  bind(address: TransportAddress, binding: (bound: TransportAddress) => MemoryBinding): MemoryBinding {
    let port = address.port;
    if (port === 0) {
      while (this.#bindings.has(key({ host: address.host, port: this.#nextPort }))) this.#nextPort++;
      port = this.#nextPort++;
    }
    const bound = { host: address.host, port };
    const k = key(bound);
    if (this.#bindings.has(k)) {
      throw new PresyncError(ErrorCodes.CONNECTION, `memory: cannot listen on ${formatAddress(bound)} (address already in use)`);
    }
    const b = binding(bound);
    this.#bindings.set(k, b);
    return b;
  }

  /** @internal */
  unbind(address: TransportAddress, listener: MemoryListener): void {
    const k = key(address);
    if (this.#bindings.get(k)?.listener === listener) this.#bindings.delete(k);
  }

  /** @internal */
  lookup(address: TransportAddress): MemoryBinding | undefined {
    return this.#bindings.get(key(address));
  }
}

function key(a: TransportAddress): string {
  return `${a.host}\u0000${a.port}`;
}

/** The network transports use when none is given. */
export const defaultMemoryNetwork = new MemoryNetwork();

class MemoryListener implements Listener {
  readonly #open = new Set<Connection>();
  #closed = false;

  constructor(
    readonly address: TransportAddress,
    private readonly network: MemoryNetwork,
  ) {}

  track(conn: Connection): void {
    this.#open.add(conn);
    void conn.closed.then(() => this.#open.delete(conn));
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  async close(options: ListenerCloseOptions = {}): Promise<void> {
    this.#closed = true;
    this.network.unbind(this.address, this);
    if (options.destroyConnections) for (const c of this.#open) c.destroy();
  }
}

export interface MemoryTransportOptions {
  readonly network?: MemoryNetwork;
  /** Buffer bound per direction on each end, bytes (default 64 KiB). */
  readonly highWaterMark?: number;
  /** Simulated connection set-up time, ms (default 0): lets tests exercise dial timeouts. */
  readonly connectDelayMs?: number;
}

let nextDialer = 1;

export class MemoryTransport implements Transport {
  readonly name = 'memory';
  readonly #network: MemoryNetwork;
  readonly #hwm: number;
  readonly #delayMs: number;

  constructor(options: MemoryTransportOptions = {}) {
    this.#network = options.network ?? defaultMemoryNetwork;
    this.#hwm = options.highWaterMark ?? DEFAULT_MEMORY_HIGH_WATER_MARK;
    this.#delayMs = options.connectDelayMs ?? 0;
    if (!Number.isInteger(this.#hwm) || this.#hwm < 1) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `highWaterMark must be a positive integer, got ${this.#hwm}`);
    }
    if (!(this.#delayMs >= 0)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `connectDelayMs must be >= 0`);
  }

  async listen(address: TransportAddress, onConnection: ConnectionHandler): Promise<Listener> {
    checkAddress(address);
    const b = this.#network.bind(address, (bound) => ({
      handler: onConnection,
      listener: new MemoryListener(bound, this.#network),
    }));
    return b.listener;
  }

  async dial(address: TransportAddress, options?: DialOptions): Promise<Connection> {
    checkAddress(address);
    const what = `dial memory ${formatAddress(address)}`;
    return withDeadline(what, options, async (signal) => {
      if (this.#delayMs > 0) await delay(this.#delayMs, signal, what);
      const binding = this.#network.lookup(address);
      if (!binding || binding.listener.isClosed) {
        throw new PresyncError(ErrorCodes.CONNECTION, `${what}: connection refused (nothing listening there?)`);
      }
      const [mine, theirs] = duplexPair(this.#hwm);
      const me = `memory-dialer-${nextDialer++}`;
      const local = new StreamConnection(mine, { transport: this.name, remote: formatAddress(address) });
      const remote = new StreamConnection(theirs, { transport: this.name, remote: me });
      binding.listener.track(remote);
      publishOpen({ transport: this.name, role: 'dial', remote: local.remote });
      publishOpen({ transport: this.name, role: 'accept', remote: remote.remote });
      // The accept side runs after dial returns, as it would across a network.
      queueMicrotask(() => {
        try {
          const r = binding.handler(remote);
          if (r instanceof Promise) r.catch((e: unknown) => remote.destroy(e instanceof Error ? e : new Error(String(e))));
        } catch (e) {
          remote.destroy(e instanceof Error ? e : new Error(String(e)));
        }
      });
      return local;
    });
  }
}

function delay(ms: number, signal: AbortSignal, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signalError(signal, what));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
