/**
 * QMP client: newline-delimited JSON over a unix socket.
 *
 * Replies are matched to commands by id (so events interleaved with replies
 * are fine), every reply is shape-checked, and the connection ending — QEMU
 * quitting resets the socket — rejects whatever is pending with
 * PRESYNC_ERR_QEMU rather than leaving promises hanging. Anything that is not
 * a QMP message poisons the connection (PRESYNC_ERR_QMP): once the stream is
 * out of step we can no longer tell which reply belongs to which command.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import net from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import { isKnownCommand, returnValidators, type QmpCommandName, type QmpCommands } from './qmp-commands.ts';
import { expectObject, field, isNonNegInt, isObject, isString, type Json, type JsonObject } from './qmp-validate.ts';
import { sleep } from '../transport/deadline.ts';

export interface QmpTimestamp {
  seconds: number;
  microseconds: number;
}

export interface QmpEvent {
  event: string;
  data: JsonObject;
  timestamp: QmpTimestamp;
}

export interface QmpGreeting {
  version: { major: number; minor: number; micro: number; package: string };
  capabilities: string[];
}

export interface QmpConnectOptions {
  /** How long to keep retrying the connect (QEMU creates the socket a little after it starts) plus the handshake. */
  connectTimeoutMs?: number;
  /** Default per-command timeout. */
  commandTimeoutMs?: number;
  /** Longest line accepted from the server; a peer that never sends a newline cannot eat memory. */
  maxLineBytes?: number;
  /** Events kept per `events()` iterator that has not caught up. */
  maxQueuedEvents?: number;
  /** Stops the connect retries (e.g. QEMU already exited); rejects with PRESYNC_ERR_ABORTED. */
  signal?: AbortSignal;
}

export interface ExecuteOptions {
  timeoutMs?: number;
}

/** A command QEMU refused: carries QMP's error class and description. */
export class QmpCommandError extends PresyncError {
  readonly command: string;
  readonly qmpClass: string;
  readonly qmpDesc: string;
  constructor(command: string, qmpClass: string, qmpDesc: string) {
    super(ErrorCodes.QMP, `QEMU refused ${command}: ${qmpDesc} (${qmpClass})`);
    this.name = 'QmpCommandError';
    this.command = command;
    this.qmpClass = qmpClass;
    this.qmpDesc = qmpDesc;
  }
}

const commandChannel = diagnostics_channel.channel('presync:qmp:command');
const eventChannel = diagnostics_channel.channel('presync:qmp:event');

interface Pending {
  command: string;
  started: number;
  resolve: (v: unknown) => void;
  reject: (e: PresyncError) => void;
  timer: NodeJS.Timeout;
}

type EventListener = (ev: QmpEvent) => void;

const DEFAULTS = { connectTimeoutMs: 10_000, commandTimeoutMs: 30_000, maxLineBytes: 16 << 20, maxQueuedEvents: 10_000 };

export class QmpClient {
  readonly path: string;
  greeting: QmpGreeting | undefined;
  /** Resolves (never rejects) when the connection has ended, with the reason. */
  readonly closed: Promise<PresyncError>;

  #socket: net.Socket;
  #decoder = new StringDecoder('utf8');
  #buf = '';
  #nextId = 1;
  #pending = new Map<string, Pending>();
  #timedOut = new Set<string>();
  #listeners = new Set<EventListener>();
  #endReason: PresyncError | undefined;
  #onEnd!: (e: PresyncError) => void;
  #greetingWaiter: { resolve: () => void; reject: (e: PresyncError) => void } | undefined;
  #opts: typeof DEFAULTS;

  private constructor(path: string, socket: net.Socket, opts: typeof DEFAULTS) {
    this.path = path;
    this.#socket = socket;
    this.#opts = opts;
    this.closed = new Promise((resolve) => {
      this.#onEnd = resolve;
    });
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    // 'error' always precedes 'close'; the reason is decided in 'close'.
    socket.on('error', (err) => {
      this.#endReason ??= new PresyncError(ErrorCodes.QEMU, `QMP connection to ${path} failed: ${err.message}; QEMU has probably exited`, { cause: err });
    });
    socket.on('close', () => this.#finish());
  }

  /** Connects (retrying while the socket does not exist yet), reads the greeting, negotiates capabilities. */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const { signal, ...rest } = options;
    const opts = { ...DEFAULTS, ...rest };
    const deadline = Date.now() + opts.connectTimeoutMs;
    const socket = await connectWithRetry(path, deadline, signal);
    const client = new QmpClient(path, socket, opts);
    try {
      await client.#awaitGreeting(Math.max(1, deadline - Date.now()));
      await client.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(1000, deadline - Date.now()) });
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  get isClosed(): boolean {
    return this.#socket.destroyed;
  }

  execute<K extends QmpCommandName>(command: K, args?: QmpCommands[K]['args'], opts?: ExecuteOptions): Promise<QmpCommands[K]['ret']>;
  execute(command: string, args?: Record<string, unknown>, opts?: ExecuteOptions): Promise<unknown>;
  execute(command: string, args?: Record<string, unknown>, opts: ExecuteOptions = {}): Promise<unknown> {
    if (this.#socket.destroyed || this.#endReason) {
      return Promise.reject(this.#endReason ?? new PresyncError(ErrorCodes.QEMU, `QMP connection to ${this.path} is closed`));
    }
    const id = `presync-${this.#nextId++}`;
    const timeoutMs = opts.timeoutMs ?? this.#opts.commandTimeoutMs;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg.arguments = args;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        // A reply may still come; remember the id so it is not taken for a protocol violation.
        this.#timedOut.add(id);
        reject(new PresyncError(ErrorCodes.TIMEOUT, `QMP command ${command} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, started: performance.now(), resolve, reject, timer });
      this.#socket.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /** Subscribes to events; returns the unsubscribe function. */
  onEvent(listener: EventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Events from now on, until the connection ends. Breaking out of the loop unsubscribes. */
  events(): AsyncIterableIterator<QmpEvent> {
    const queue: QmpEvent[] = [];
    let wake: (() => void) | undefined;
    let done = false;
    const max = this.#opts.maxQueuedEvents;
    const off = this.onEvent((ev) => {
      if (queue.length >= max) queue.shift();
      queue.push(ev);
      wake?.();
    });
    void this.closed.then(() => {
      done = true;
      wake?.();
    });
    const finish = (): IteratorResult<QmpEvent> => {
      done = true;
      off();
      return { value: undefined, done: true };
    };
    const it: AsyncIterableIterator<QmpEvent> = {
      next: async () => {
        for (;;) {
          const ev = queue.shift();
          if (ev) return { value: ev, done: false };
          if (done || this.isClosed) return finish();
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      },
      return: async () => finish(),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /**
   * The next event named `name` (that `predicate` accepts). Subscribe before
   * doing whatever triggers the event, or check state after subscribing, as
   * events are not replayed.
   */
  waitForEvent(
    name: string,
    predicate: (ev: QmpEvent) => boolean = () => true,
    timeoutMs = this.#opts.commandTimeoutMs,
    opts: { signal?: AbortSignal } = {},
  ): Promise<QmpEvent> {
    if (this.#endReason || this.#socket.destroyed) {
      return Promise.reject(this.#endReason ?? new PresyncError(ErrorCodes.QEMU, `QMP connection to ${this.path} is closed`));
    }
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        off();
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        cleanup();
        reject(new PresyncError(ErrorCodes.ABORTED, `stopped waiting for QMP event ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new PresyncError(ErrorCodes.TIMEOUT, `QMP event ${name} did not arrive within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onEvent((ev) => {
        if (ev.event !== name) return;
        let ok: boolean;
        try {
          ok = predicate(ev);
        } catch (e) {
          cleanup();
          reject(new PresyncError(ErrorCodes.QMP, `event ${name} has an unexpected shape: ${(e as Error).message}`, { cause: e }));
          return;
        }
        if (ok) {
          cleanup();
          resolve(ev);
        }
      });
      void this.closed.then((reason) => {
        cleanup();
        reject(reason);
      });
      if (opts.signal?.aborted) onAbort();
      else opts.signal?.addEventListener('abort', onAbort);
    });
  }

  /** Sends `quit`; QEMU closing the socket before replying counts as success. */
  async quit(timeoutMs = 10_000): Promise<void> {
    try {
      await this.execute('quit', undefined, { timeoutMs });
    } catch (e) {
      if (!(e instanceof PresyncError && e.code === ErrorCodes.QEMU)) throw e;
    }
    await this.closed;
  }

  /** Closes the connection; pending commands reject with PRESYNC_ERR_QEMU. */
  close(): void {
    this.#endReason ??= new PresyncError(ErrorCodes.QEMU, `QMP connection to ${this.path} was closed by presync`);
    this.#socket.destroy();
  }

  #awaitGreeting(timeoutMs: number): Promise<void> {
    if (this.greeting) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#greetingWaiter = undefined;
        reject(new PresyncError(ErrorCodes.TIMEOUT, `no QMP greeting on ${this.path} within ${timeoutMs} ms; QEMU serves one client per QMP socket, is another one connected?`));
      }, timeoutMs);
      this.#greetingWaiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  #onData(chunk: Buffer): void {
    this.#buf += this.#decoder.write(chunk);
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (line.length > 0) this.#onLine(line);
      if (this.#socket.destroyed) return;
    }
    if (this.#buf.length > this.#opts.maxLineBytes) {
      this.#poison(`a line longer than ${this.#opts.maxLineBytes} bytes`);
    }
  }

  #onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.#poison(`malformed JSON ${JSON.stringify(line.slice(0, 80))}`);
      return;
    }
    if (!isObject(msg)) {
      this.#poison(`a non-object message ${JSON.stringify(line.slice(0, 80))}`);
      return;
    }
    try {
      if ('QMP' in msg) this.#onGreeting(msg.QMP);
      else if ('event' in msg) this.#onEventMsg(msg);
      else if ('return' in msg || 'error' in msg) this.#onReply(msg);
      else throw new PresyncError(ErrorCodes.QMP, `a message that is neither reply nor event: ${line.slice(0, 80)}`);
    } catch (e) {
      this.#poison(e instanceof Error ? e.message : String(e));
    }
  }

  #onGreeting(v: Json): void {
    if (this.greeting) throw new PresyncError(ErrorCodes.QMP, 'a second greeting');
    const o = expectObject(v, 'greeting');
    const version = expectObject(o.version, 'greeting version');
    const qemu = expectObject(version.qemu, 'greeting version');
    const n = (k: string) => field(qemu, k, 'greeting version', isNonNegInt, 'a non-negative integer');
    const caps = Array.isArray(o.capabilities) ? o.capabilities.filter(isString) : [];
    this.greeting = {
      version: { major: n('major'), minor: n('minor'), micro: n('micro'), package: isString(version.package) ? version.package : '' },
      capabilities: caps,
    };
    this.#greetingWaiter?.resolve();
    this.#greetingWaiter = undefined;
  }

  #onEventMsg(o: JsonObject): void {
    const event = field(o, 'event', 'event', isString, 'a string');
    const ts = expectObject(o.timestamp, `event ${event} timestamp`);
    const data = o.data === undefined ? {} : expectObject(o.data, `event ${event} data`);
    const ev: QmpEvent = {
      event,
      data,
      timestamp: {
        seconds: field(ts, 'seconds', 'event timestamp', isNonNegInt, 'an integer'),
        microseconds: field(ts, 'microseconds', 'event timestamp', isNonNegInt, 'an integer'),
      },
    };
    if (eventChannel.hasSubscribers) eventChannel.publish({ path: this.path, ...ev });
    for (const l of [...this.#listeners]) l(ev);
  }

  #onReply(o: JsonObject): void {
    if (!isString(o.id)) throw new PresyncError(ErrorCodes.QMP, `a reply without our id: ${JSON.stringify(o).slice(0, 120)}`);
    const p = this.#pending.get(o.id);
    if (!p) {
      if (this.#timedOut.delete(o.id)) return;
      throw new PresyncError(ErrorCodes.QMP, `a reply to unknown command id ${JSON.stringify(o.id)}`);
    }
    this.#pending.delete(o.id);
    clearTimeout(p.timer);
    const publish = (ok: boolean) => {
      if (commandChannel.hasSubscribers) {
        commandChannel.publish({ path: this.path, command: p.command, ok, durationMs: performance.now() - p.started });
      }
    };
    if ('error' in o) {
      publish(false);
      const err = o.error;
      if (!isObject(err) || !isString(err.class) || !isString(err.desc)) {
        p.reject(new PresyncError(ErrorCodes.QMP, `QEMU refused ${p.command} with a malformed error: ${JSON.stringify(err).slice(0, 120)}`));
        return;
      }
      p.reject(new QmpCommandError(p.command, err.class, err.desc));
      return;
    }
    publish(true);
    try {
      p.resolve(isKnownCommand(p.command) ? returnValidators[p.command](o.return) : o.return);
    } catch (e) {
      p.reject(e instanceof PresyncError ? e : new PresyncError(ErrorCodes.QMP, String(e)));
    }
  }

  #poison(what: string): void {
    this.#endReason ??= new PresyncError(ErrorCodes.QMP, `QMP peer at ${this.path} sent ${what}; connection dropped`);
    this.#socket.destroy();
  }

  #finish(): void {
    const reason = (this.#endReason ??= new PresyncError(ErrorCodes.QEMU, `QMP connection to ${this.path} closed; QEMU has probably exited`));
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this.#pending.clear();
    this.#greetingWaiter?.reject(reason);
    this.#greetingWaiter = undefined;
    this.#onEnd(reason);
  }
}

async function connectWithRetry(path: string, deadline: number, signal: AbortSignal | undefined): Promise<net.Socket> {
  let lastErr: unknown;
  for (;;) {
    if (signal?.aborted) throw new PresyncError(ErrorCodes.ABORTED, `connecting to QMP socket ${path} was abandoned`);
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.createConnection({ path });
        s.once('connect', () => {
          s.removeListener('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
    } catch (e) {
      lastErr = e;
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ECONNREFUSED') {
        throw new PresyncError(ErrorCodes.QEMU, `cannot connect to QMP socket ${path}: ${(e as Error).message}`, { cause: e });
      }
    }
    if (Date.now() >= deadline) {
      throw new PresyncError(ErrorCodes.TIMEOUT, `QMP socket ${path} not reachable before the deadline: ${(lastErr as Error).message}; is QEMU running with -qmp unix:${path},server=on,wait=off?`, { cause: lastErr });
    }
    await sleep(50);
  }
}
