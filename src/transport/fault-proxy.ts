/**
 * A TCP proxy on loopback that forwards between clients and one upstream and
 * injects faults on command: cut, stall, throttle, corrupt. For tests and
 * benches of reconnection, integrity checks and slow links with real sockets.
 *
 * Directions: 'up' is client -> upstream, 'down' is upstream -> client.
 * Byte positions (`corruptNext`, `cutAfter`, `stallAfter`) count the bytes
 * forwarded in that direction over the proxy's whole life, all connections
 * together, starting from the moment of the call: `corruptNext('up', 0)`
 * corrupts the very next byte a client sends. With one connection at a time
 * (a client that reconnects) that is simply a position in the current stream.
 *
 * Each client connection gets its own upstream connection, so a reconnecting
 * client is served again. Forwarding keeps backpressure: a stalled or
 * throttled proxy stops reading, and the sender's socket buffers fill up.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { checkAddress, formatAddress } from './address.ts';
import { parseRate } from './rate.ts';
import { resetSocket } from './tcp.ts';
import { TokenBucket } from './token-bucket.ts';
import type { TransportAddress } from './types.ts';
import { sleep } from './deadline.ts';

export type Direction = 'up' | 'down';
/**
 * 'reset': both sides get an RST. 'end': both sides get a clean FIN after what was forwarded.
 *
 * Caveat, from libuv rather than from us: when an RST arrives right behind
 * data the reader has not read yet, libuv turns the hang-up into a plain EOF,
 * so that reader may see a clean end instead of ECONNRESET. Protocols must not
 * take EOF as success without their own explicit end-of-stream message.
 */
export type CutMode = 'reset' | 'end';

export interface FaultProxyOptions {
  readonly upstream: TransportAddress;
  /** Where to listen; default 127.0.0.1, any free port. */
  readonly listen?: TransportAddress;
}

export interface BytesEvent {
  readonly direction: Direction;
  /** Bytes forwarded just now. */
  readonly bytes: number;
  /** Bytes forwarded in this direction so far, all connections. */
  readonly total: number;
  /** 1-based number of the client connection that carried them. */
  readonly connection: number;
}

export interface FaultProxyStats {
  readonly up: number;
  readonly down: number;
  /** Client connections accepted so far. */
  readonly connections: number;
  /** Client connections currently open. */
  readonly active: number;
}

interface Pair {
  readonly id: number;
  readonly client: net.Socket;
  upstream: net.Socket | undefined;
  /** Set by a cut: nothing more is forwarded. */
  cut: boolean;
}

interface Trigger {
  readonly at: number;
  readonly fire: () => void;
}

const DIRECTIONS: readonly Direction[] = ['up', 'down'];

export class FaultProxy {
  readonly address: TransportAddress;
  readonly upstream: TransportAddress;

  readonly #server: net.Server;
  readonly #pairs = new Set<Pair>();
  readonly #forwarded: Record<Direction, number> = { up: 0, down: 0 };
  readonly #corrupt: Record<Direction, Map<number, number>> = { up: new Map(), down: new Map() };
  readonly #triggers: Record<Direction, Trigger[]> = { up: [], down: [] };
  readonly #stalled: Record<Direction, boolean> = { up: false, down: false };
  readonly #stallTimers = new Set<NodeJS.Timeout>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #gateWaiters = new Set<() => void>();
  readonly #listeners = new Set<(e: BytesEvent) => void>();
  #buckets: Record<Direction, TokenBucket> | undefined;
  #accepting = true;
  #connections = 0;
  #closed = false;

  private constructor(server: net.Server, address: TransportAddress, upstream: TransportAddress) {
    this.#server = server;
    this.address = address;
    this.upstream = upstream;
  }

  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    checkAddress(options.upstream);
    const at = options.listen ?? { host: '127.0.0.1', port: 0 };
    checkAddress(at);
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    const address = await new Promise<TransportAddress>((resolve, reject) => {
      server.once('error', (e) =>
        reject(new PresyncError(ErrorCodes.CONNECTION, `fault proxy: cannot listen on ${formatAddress(at)}: ${e.message}`, { cause: e })),
      );
      server.listen({ host: at.host, port: at.port }, () => {
        const a = server.address() as net.AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
    server.on('error', () => undefined);
    const proxy = new FaultProxy(server, address, options.upstream);
    server.on('connection', (s: net.Socket) => proxy.#accept(s));
    return proxy;
  }

  /** Bytes forwarded each way and connection counts. */
  get stats(): FaultProxyStats {
    return { up: this.#forwarded.up, down: this.#forwarded.down, connections: this.#connections, active: this.#pairs.size };
  }

  /** Subscribes to forwarded-bytes reports; returns the unsubscribe function. */
  onBytes(listener: (e: BytesEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Cuts every open connection, both sides, now. */
  cutAll(mode: CutMode = 'reset'): void {
    for (const p of [...this.#pairs]) this.#cut(p, mode);
  }

  /** Cuts everything once `bytes` more bytes have been forwarded in `direction` (those bytes do go through). */
  cutAfter(direction: Direction, bytes: number, mode: CutMode = 'reset'): void {
    this.#addTrigger(direction, bytes, () => this.cutAll(mode));
  }

  /**
   * Stops forwarding (in one direction or both) until `resume()` or, if `ms`
   * is given, for that long. Connections stay open; senders see backpressure.
   */
  stall(ms?: number, direction: Direction | 'both' = 'both'): void {
    if (ms !== undefined && !(ms >= 0)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `stall: ms must be >= 0, got ${ms}`);
    const dirs = direction === 'both' ? DIRECTIONS : [direction];
    for (const d of dirs) this.#stalled[d] = true;
    if (ms !== undefined) {
      const t = setTimeout(() => {
        this.#stallTimers.delete(t);
        for (const d of dirs) this.#stalled[d] = false;
        this.#wakeGates();
      }, ms);
      this.#stallTimers.add(t);
    }
  }

  /** Stalls once `bytes` more bytes have been forwarded in `direction`. */
  stallAfter(direction: Direction, bytes: number, ms?: number, stallDirection: Direction | 'both' = 'both'): void {
    this.#addTrigger(direction, bytes, () => this.stall(ms, stallDirection));
  }

  /** Ends every stall. */
  resume(): void {
    for (const t of this.#stallTimers) clearTimeout(t);
    this.#stallTimers.clear();
    this.#stalled.up = false;
    this.#stalled.down = false;
    this.#wakeGates();
  }

  /** Limits each direction to `rate` (bytes/s or a rate string like '10mbit'); null lifts the limit. */
  throttle(rate: number | string | null, burstBytes?: number): void {
    if (rate === null) {
      this.#buckets = undefined;
      return;
    }
    const r = typeof rate === 'string' ? parseRate(rate) : rate;
    const now = performance.now();
    const mk = (): TokenBucket => new TokenBucket({ rateBytesPerSec: r, ...(burstBytes !== undefined ? { burstBytes } : {}), nowMs: now });
    this.#buckets = { up: mk(), down: mk() };
  }

  /** XORs the byte `offset` bytes after the last one forwarded in `direction` with `mask` (default 0xff). */
  corruptNext(direction: Direction, offset = 0, mask = 0xff): void {
    if (!Number.isInteger(offset) || offset < 0) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `corruptNext: offset must be an integer >= 0, got ${offset}`);
    }
    if (!Number.isInteger(mask) || mask < 1 || mask > 255) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `corruptNext: mask must be 1-255, got ${mask}`);
    }
    checkDirection(direction);
    const pos = this.#forwarded[direction] + offset;
    const m = this.#corrupt[direction];
    m.set(pos, (m.get(pos) ?? 0) ^ mask);
  }

  /**
   * Runs a fault `ms` from now, e.g. `p.after(500, () => p.cutAll())`.
   * Returns a cancel function; pending actions are dropped by `close()`.
   */
  after(ms: number, action: () => void): () => void {
    if (!(ms >= 0) || !Number.isFinite(ms)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `after: ms must be >= 0, got ${ms}`);
    const t = setTimeout(() => {
      this.#timers.delete(t);
      if (!this.#closed) action();
    }, ms);
    this.#timers.add(t);
    return () => {
      clearTimeout(t);
      this.#timers.delete(t);
    };
  }

  /** While false, new clients are accepted and immediately reset (a peer that is down). */
  setAccepting(on: boolean): void {
    this.#accepting = on;
  }

  /** Stops listening and resets every connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.resume();
    this.cutAll('reset');
    await new Promise<void>((r) => this.#server.close(() => r()));
  }

  #addTrigger(direction: Direction, bytes: number, fire: () => void): void {
    checkDirection(direction);
    if (!Number.isInteger(bytes) || bytes < 0) {
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `byte count must be an integer >= 0, got ${bytes}`);
    }
    const at = this.#forwarded[direction] + bytes;
    if (bytes === 0) {
      fire();
      return;
    }
    const list = this.#triggers[direction];
    list.push({ at, fire });
    list.sort((a, b) => a.at - b.at);
  }

  #accept(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.#closed || !this.#accepting) {
      resetSocket(client);
      return;
    }
    client.setNoDelay(true);
    const pair: Pair = { id: ++this.#connections, client, upstream: undefined, cut: false };
    this.#pairs.add(pair);
    const upstream = net.connect({ host: this.upstream.host, port: this.upstream.port, allowHalfOpen: true });
    pair.upstream = upstream;
    upstream.on('error', () => undefined);
    upstream.setNoDelay(true);
    let done = 0;
    const finish = (): void => {
      if (++done === 2) this.#pairs.delete(pair);
    };
    client.once('close', finish);
    upstream.once('close', finish);
    // Either side dying abruptly takes the other one down the same way.
    client.once('error', () => resetSocket(upstream));
    upstream.once('error', () => resetSocket(client));
    upstream.once('connect', () => {
      void this.#pump(pair, client, upstream, 'up');
      void this.#pump(pair, upstream, client, 'down');
    });
  }

  async #pump(pair: Pair, src: net.Socket, dst: net.Socket, dir: Direction): Promise<void> {
    try {
      // destroyOnReturn: false, or finishing one direction would tear down the other.
      for await (const chunk of src.iterator({ destroyOnReturn: false })) {
        const buf = chunk as Buffer;
        let off = 0;
        while (off < buf.length) {
          await this.#gate(dir, dst);
          if (dst.destroyed || pair.cut) return;
          let n = buf.length - off;
          const next = this.#triggers[dir][0];
          if (next) n = Math.min(n, next.at - this.#forwarded[dir]);
          const bucket = this.#buckets?.[dir];
          if (bucket) {
            n = Math.min(n, Math.max(1, Math.min(16 * 1024, Math.floor(bucket.burstBytes))));
            const wait = bucket.take(n, performance.now());
            if (wait > 0) await sleepMs(wait);
            if (dst.destroyed || pair.cut) return;
          }
          if (n > 0) {
            const piece = this.#applyCorruption(dir, buf.subarray(off, off + n));
            off += n;
            this.#forwarded[dir] += n;
            const ok = dst.write(piece);
            this.#report({ direction: dir, bytes: n, total: this.#forwarded[dir], connection: pair.id });
            if (!ok) await waitDrain(dst);
          }
          this.#fireTriggers(dir);
        }
      }
      // The sender finished cleanly: pass its end on.
      if (!dst.destroyed && !pair.cut) dst.end();
    } catch {
      // The source broke (or was cut); its error handler already reset the other side.
    }
  }

  #applyCorruption(dir: Direction, piece: Buffer): Buffer {
    const m = this.#corrupt[dir];
    if (m.size === 0) return piece;
    const start = this.#forwarded[dir];
    let out = piece;
    for (const [pos, mask] of m) {
      if (pos >= start && pos < start + piece.length) {
        if (out === piece) out = Buffer.from(piece);
        out[pos - start]! ^= mask;
        m.delete(pos);
      }
    }
    return out;
  }

  #fireTriggers(dir: Direction): void {
    const list = this.#triggers[dir];
    while (list.length > 0 && list[0]!.at <= this.#forwarded[dir]) list.shift()!.fire();
  }

  #gate(dir: Direction, dst: net.Socket): Promise<void> | void {
    if (!this.#stalled[dir] || dst.destroyed) return;
    return new Promise<void>((resolve) => {
      const check = (): void => {
        if (!this.#stalled[dir] || dst.destroyed || dst.writableEnded) {
          this.#gateWaiters.delete(check);
          dst.off('close', check);
          resolve();
        }
      };
      this.#gateWaiters.add(check);
      dst.once('close', check);
    });
  }

  #wakeGates(): void {
    for (const w of [...this.#gateWaiters]) w();
  }

  #cut(p: Pair, mode: CutMode): void {
    p.cut = true;
    const sockets = [p.client, p.upstream].filter((s): s is net.Socket => s !== undefined);
    for (const s of sockets) {
      if (mode === 'reset') resetSocket(s);
      // A clean FIN after what was already forwarded; the socket closes once that is flushed.
      else if (!s.destroyed) s.end(() => s.destroy());
    }
    this.#wakeGates();
  }

  #report(e: BytesEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // A broken listener must not break forwarding.
      }
    }
  }
}

function checkDirection(d: string): asserts d is Direction {
  if (d !== 'up' && d !== 'down') {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `direction must be 'up' (client to upstream) or 'down', got ${JSON.stringify(d)}`);
  }
}

function sleepMs(ms: number): Promise<void> {
  return sleep(Math.max(1, Math.ceil(ms)));
}

function waitDrain(s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}
