import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { lstatSync, unlinkSync, type Stats } from 'node:fs';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

/**
 * A source agent's control socket: a unix socket speaking one JSON request per
 * line (`{"cmd":"launch"}`, `{"cmd":"launch","whenReady":true}`,
 * `{"cmd":"status"}`, `{"cmd":"abort","reason":"…"}`,
 * `{"cmd":"set","bandwidth":"100mbit","downtimeLimit":"200ms"}`) and one JSON
 * reply per line. It lets a person or a script say "go", stop, retune and
 * watch progress without touching the migration's own connection.
 */
export type ControlRequest =
  | { cmd: 'launch'; whenReady?: boolean }
  | { cmd: 'status' }
  | { cmd: 'abort'; reason?: string }
  | { cmd: 'set'; bandwidth?: string | null; downtimeLimit?: string };
export type ControlReply = { ok: true; status: Record<string, unknown> } | { ok: false; error: { code: string; message: string } };

export interface ControlHandlers {
  launch(): Record<string, unknown>;
  status(): Record<string, unknown>;
  /** Optional: agents without them answer "unknown command". */
  abort?(reason?: string): Record<string, unknown>;
  launchWhenReady?(): Record<string, unknown>;
  set?(s: { bandwidth?: string | null; downtimeLimit?: string }): Record<string, unknown>;
}

const MAX_LINE = 4096;

export class ControlServer {
  private constructor(private readonly server: Server, readonly path: string, private readonly ino: number) {}

  static async listen(path: string, handlers: ControlHandlers): Promise<ControlServer> {
    const st = lstatOrNull(path);
    if (st) {
      // Only ever a socket is replaced: never a file (or what a symlink points to) that happens to sit at the path.
      if (st.isSymbolicLink()) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--control ${path} is a symbolic link; give the path of a socket (it is created there)`);
      if (!st.isSocket()) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--control ${path} exists and is not a socket; refusing to replace it: give a path where nothing else lives`);
      // A stale socket from a dead agent is removed; a live one refuses the bind below.
      const live = await probe(path);
      if (live) throw new PresyncError(ErrorCodes.BUSY, `control socket ${path} is in use by another running migration`);
      unlinkSocket(path, st.ino);
    }
    const server = createServer((sock) => serve(sock, handlers));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new PresyncError(ErrorCodes.BAD_ARGUMENT, `cannot listen on control socket ${path}: ${e.message}`)));
      server.listen(path, () => resolve());
    });
    return new ControlServer(server, path, lstatOrNull(path)?.ino ?? -1);
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => this.server.close(() => r()));
    // Ours only: if something else took the path meanwhile, it stays.
    unlinkSocket(this.path, this.ino);
  }
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

/** Unlinks `path` only if it is still the socket `ino`. */
function unlinkSocket(path: string, ino: number): void {
  const st = lstatOrNull(path);
  if (!st || !st.isSocket() || st.ino !== ino) return;
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}

function serve(sock: Socket, h: ControlHandlers): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('error', () => sock.destroy());
  sock.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > MAX_LINE && !buf.includes('\n')) {
      reply(sock, { ok: false, error: { code: ErrorCodes.BAD_ARGUMENT, message: 'request line too long' } });
      sock.end();
      return;
    }
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      reply(sock, handle(line, h));
    }
  });
}

function handle(line: string, h: ControlHandlers): ControlReply {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    return { ok: false, error: { code: ErrorCodes.BAD_ARGUMENT, message: 'request is not JSON' } };
  }
  const r = typeof req === 'object' && req !== null ? (req as Record<string, unknown>) : {};
  const cmd = r.cmd;
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  try {
    if (cmd === 'launch' && r.whenReady === true && h.launchWhenReady) return { ok: true, status: h.launchWhenReady() };
    if (cmd === 'launch') return { ok: true, status: h.launch() };
    if (cmd === 'status') return { ok: true, status: h.status() };
    if (cmd === 'abort' && h.abort) return { ok: true, status: h.abort(str(r.reason)) };
    if (cmd === 'set' && h.set) {
      const bandwidth = r.bandwidth === null ? null : str(r.bandwidth);
      const downtimeLimit = str(r.downtimeLimit);
      return { ok: true, status: h.set({ ...(bandwidth !== undefined ? { bandwidth } : {}), ...(downtimeLimit !== undefined ? { downtimeLimit } : {}) }) };
    }
  } catch (e) {
    const err = e instanceof PresyncError ? e : new PresyncError(ErrorCodes.INTERNAL, String(e));
    return { ok: false, error: { code: err.code, message: err.message } };
  }
  return { ok: false, error: { code: ErrorCodes.BAD_ARGUMENT, message: `unknown command ${JSON.stringify(cmd)}; expected launch, status${h.abort ? ', abort' : ''}${h.set ? ', set' : ''}` } };
}

function reply(sock: Socket, r: ControlReply): void {
  if (!sock.destroyed) sock.write(JSON.stringify(r) + '\n');
}

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Sends one request to a control socket and returns the reply. */
export async function controlRequest(path: string, req: ControlRequest, timeoutMs = 5000): Promise<Record<string, unknown>> {
  return await new Promise((resolve, reject) => {
    const s = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new PresyncError(ErrorCodes.TIMEOUT, `no reply from control socket ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(new PresyncError(ErrorCodes.CONNECTION, `cannot reach control socket ${path}: ${e.message}; is "presync migrate --control ${path}" running?`));
    });
    s.once('connect', () => s.write(JSON.stringify(req) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      s.destroy();
      let r: ControlReply;
      try {
        r = JSON.parse(buf.slice(0, nl)) as ControlReply;
      } catch {
        reject(new PresyncError(ErrorCodes.PROTOCOL, `control socket ${path} sent a reply that is not JSON`));
        return;
      }
      if (r.ok) resolve(r.status);
      else reject(new PresyncError((r.error.code as PresyncError['code']) ?? ErrorCodes.INTERNAL, r.error.message));
    });
  });
}
