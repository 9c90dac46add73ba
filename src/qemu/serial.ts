/**
 * Follows a guest's serial console written by QEMU to a file
 * (`-serial file:PATH`). A file rather than a socket: nothing is lost before
 * the host starts reading, and the log stays behind for post-mortems.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

export interface SerialLine {
  /** Absolute index of the line since the log was opened. */
  index: number;
  text: string;
  /** Host time (Date.now()) when the reader saw the line. */
  seenAt: number;
}

export interface LineMatch extends SerialLine {
  match: RegExpMatchArray;
}

export interface SerialLogOptions {
  pollMs?: number;
  /** Lines kept in memory; older ones are forgotten (indices stay absolute). */
  maxLines?: number;
}

export class SerialLog {
  readonly path: string;
  #lines: SerialLine[] = [];
  #base = 0;
  #partial = '';
  #offset = 0;
  #fh: FileHandle | undefined;
  #timer: NodeJS.Timeout | undefined;
  #reading = false;
  #stopped = false;
  #waiters = new Set<() => void>();
  #pollMs: number;
  #maxLines: number;

  constructor(path: string, opts: SerialLogOptions = {}) {
    this.path = path;
    this.#pollMs = opts.pollMs ?? 50;
    this.#maxLines = opts.maxLines ?? 200_000;
    this.#timer = setInterval(() => void this.#poll(), this.#pollMs);
    this.#timer.unref();
  }

  /** Index the next line will get: pass it as `since` to wait only for lines not seen yet. */
  get nextIndex(): number {
    return this.#base + this.#lines.length;
  }

  /** Lines still in memory with index >= since. */
  lines(since = 0): SerialLine[] {
    return this.#lines.slice(Math.max(0, since - this.#base));
  }

  /** All remembered lines whose text matches `re`. */
  matching(re: RegExp, since = 0): LineMatch[] {
    const out: LineMatch[] = [];
    for (const l of this.lines(since)) {
      const m = l.text.match(re);
      if (m) out.push({ ...l, match: m });
    }
    return out;
  }

  /** The first line (index >= since) matching `re`; already-read lines count. */
  async waitForLine(re: RegExp, timeoutMs: number, since = 0): Promise<LineMatch> {
    const deadline = Date.now() + timeoutMs;
    let from = since;
    for (;;) {
      for (const l of this.lines(from)) {
        const m = l.text.match(re);
        if (m) return { ...l, match: m };
      }
      from = Math.max(from, this.nextIndex);
      if (this.#stopped) throw new PresyncError(ErrorCodes.GUEST, `serial log ${this.path} closed before a line matched ${re}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        const tail = this.lines(this.nextIndex - 5).map((l) => l.text).join(' | ');
        throw new PresyncError(ErrorCodes.TIMEOUT, `no serial line matched ${re} within ${timeoutMs} ms (last lines: ${tail || 'none'})`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, left);
        function done() {
          clearTimeout(t);
          resolve();
        }
        this.#waiters.add(() => done());
      });
    }
  }

  /** Reads whatever QEMU has written so far (also called by the poll timer). */
  async flush(): Promise<void> {
    await this.#poll();
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#poll();
    this.#stopped = true;
    this.#wake();
    await this.#fh?.close().catch(() => {});
    this.#fh = undefined;
  }

  async #poll(): Promise<void> {
    if (this.#reading || this.#stopped) return;
    this.#reading = true;
    try {
      if (!this.#fh) {
        try {
          this.#fh = await open(this.path, 'r');
        } catch {
          return; // QEMU has not created it yet
        }
      }
      const chunk = Buffer.alloc(1 << 16);
      let got = false;
      for (;;) {
        const { bytesRead } = await this.#fh.read(chunk, 0, chunk.length, this.#offset);
        if (bytesRead === 0) break;
        this.#offset += bytesRead;
        this.#partial += chunk.toString('latin1', 0, bytesRead);
        got = true;
      }
      if (got) this.#split();
    } catch {
      // A vanished or unreadable log just stops producing lines.
    } finally {
      this.#reading = false;
    }
  }

  #split(): void {
    const parts = this.#partial.split('\n');
    this.#partial = parts.pop() ?? '';
    const now = Date.now();
    for (const p of parts) {
      this.#lines.push({ index: this.#base + this.#lines.length, text: p.replace(/\r$/, ''), seenAt: now });
    }
    if (this.#lines.length > this.#maxLines) {
      const drop = this.#lines.length - this.#maxLines;
      this.#lines.splice(0, drop);
      this.#base += drop;
    }
    this.#wake();
  }

  #wake(): void {
    const ws = [...this.#waiters];
    this.#waiters.clear();
    for (const w of ws) w();
  }
}
