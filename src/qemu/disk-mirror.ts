/**
 * Non-shared storage, pre-synchronized: the target QEMU serves its disks over
 * NBD while it waits, the source QEMU mirrors each disk into them with
 * `blockdev-mirror` from the start of presync and keeps the jobs `ready`
 * (every guest write is copied as it happens); at the switchover, with the
 * source vCPUs stopped, each job is completed the way libvirt completes
 * --copy-storage-all (`block-job-cancel` of a ready job: it drains what is
 * left and ends without pivoting, so both disks are then identical and the
 * source keeps using its own).
 *
 *   target  startNbdExports()    nbd-server-start + block-export-add (writable)
 *   source  DiskMirror.start()   blockdev-add (nbd client) + blockdev-mirror sync=full
 *           ... presync; launch waits until every job is ready ...
 *           pause: migrate → pre-switchover (vCPUs stopped)
 *           DiskMirror.complete() block-job-cancel (ready → completes, no pivot) + blockdev-del
 *   target  stopNbdExports()     nbd-server-stop, before `cont`
 * Any failure before the handover: DiskMirror.cancel() (force) and the source
 * goes on with the disk it never stopped using.
 *
 * Names checked against QEMU 7.2's QMP schema (query-qmp-schema): 7.2 has no
 * `block-job-change`, so the copy mode is chosen when the job starts.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { BlockInfo, BlockJobInfo, BlockdevAddNbd, BlockdevMirrorArgs } from './qmp-commands.ts';
import type { QmpClient, QmpEvent } from './qmp.ts';

// ---- pure planning

/** A disk of the VM as presync sees it: the key both ends share, its top node and its file. */
export interface VmDisk {
  /** The name both ends agree on: the -drive id, else the -blockdev node name (the same command line gives the same names). */
  readonly key: string;
  readonly nodeName: string;
  readonly file: string;
  readonly readOnly: boolean;
  readonly format: string;
}

/** The disks of query-block that have a medium, keyed as both ends name them. */
export function vmDisks(blocks: readonly BlockInfo[]): VmDisk[] {
  const out: VmDisk[] = [];
  for (const b of blocks) {
    if (!b.inserted) continue;
    const key = b.device !== '' ? b.device : b.inserted.nodeName;
    out.push({ key, nodeName: b.inserted.nodeName, file: b.inserted.file, readOnly: b.inserted.ro, format: b.inserted.drv });
  }
  return out;
}

/**
 * The disks to copy: the writable ones (a read-only disk, such as a CD-ROM,
 * is the same image on both hosts), or those named. A name that is not a
 * writable disk of the VM is bad usage.
 */
export function selectDisks(disks: readonly VmDisk[], wanted: readonly string[] | 'all'): VmDisk[] {
  const writable = disks.filter((d) => !d.readOnly);
  if (wanted === 'all') {
    if (writable.length === 0) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, 'the VM has no writable disk to copy; drop --copy-storage');
    return writable;
  }
  return wanted.map((w) => {
    const d = writable.find((x) => x.key === w || x.nodeName === w);
    if (!d) {
      const names = writable.map((x) => x.key).join(', ') || 'none';
      throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--copy-storage: "${w}" is not a writable disk of the VM (its writable disks: ${names})`);
    }
    return d;
  });
}

/** A QEMU node or job name made from a disk key: letters, digits, '-', '_', '.', starting with a letter. */
export function qemuName(prefix: string, key: string): string {
  const safe = key.replace(/[^A-Za-z0-9_.-]/g, '_');
  const name = `${prefix}-${safe}`;
  if (name.length > 120) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `disk name "${key}" is too long for a QEMU node name`);
  return name;
}

export interface NbdAddress {
  readonly host: string;
  readonly port: number;
}

/** One disk's mirror: the NBD client node, the job, and the QMP arguments that create them. */
export interface MirrorPlan {
  readonly disk: VmDisk;
  readonly jobId: string;
  readonly nbdNode: string;
  readonly blockdevAdd: BlockdevAddNbd;
  readonly mirror: BlockdevMirrorArgs;
}

export type CopyMode = 'background' | 'write-blocking';

/**
 * The mirror of each disk into the target's export of the same name. Errors
 * are reported (the job fails and presync rolls back) rather than retried by
 * QEMU; the job is neither finalized nor dismissed on its own, so its end
 * is always seen (query-block-jobs shows a concluded job until dismissed).
 */
export function planMirrors(disks: readonly VmDisk[], nbd: NbdAddress, copyMode: CopyMode = 'background'): MirrorPlan[] {
  return disks.map((disk) => {
    const jobId = qemuName('presync-mirror', disk.key);
    const nbdNode = qemuName('presync-nbd', disk.key);
    return {
      disk,
      jobId,
      nbdNode,
      blockdevAdd: { driver: 'nbd', 'node-name': nbdNode, server: { type: 'inet', host: nbd.host, port: String(nbd.port) }, export: disk.key },
      mirror: {
        'job-id': jobId,
        device: disk.nodeName,
        target: nbdNode,
        sync: 'full',
        'copy-mode': copyMode,
        'on-source-error': 'report',
        'on-target-error': 'report',
      },
    };
  });
}

/** The NBD export of each disk on the target, named by its key. */
export function planExports(disks: readonly VmDisk[]): { id: string; nodeName: string; name: string }[] {
  return disks.map((d) => ({ id: qemuName('presync-export', d.key), nodeName: d.nodeName, name: d.key }));
}

/** `HOST:PORT` or `[V6]:PORT` → NbdAddress. */
export function parseNbdAddress(text: string | undefined, flag: string): NbdAddress {
  const m = text === undefined ? null : /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `--${flag} must be HOST:PORT (a port from 1 to 65535), got "${text ?? ''}"`);
  return { host: m[1] ?? m[2], port };
}

/** Per-job state from QMP events; pure so the transitions can be tested without QEMU. */
export interface JobState {
  readonly jobId: string;
  ready: boolean;
  /** Ended: 'completed' (synced, no pivot), 'cancelled' (not synced) or 'failed'. */
  ended: 'completed' | 'cancelled' | 'failed' | null;
  error: string | null;
  len: number;
  offset: number;
}

/** Applies one QMP event to the job it names; returns whether it did. */
export function applyJobEvent(jobs: readonly JobState[], ev: QmpEvent): boolean {
  const id = typeof ev.data.device === 'string' ? ev.data.device : typeof ev.data.id === 'string' ? ev.data.id : null;
  const j = jobs.find((x) => x.jobId === id);
  if (!j) return false;
  const num = (k: string): number | null => (typeof ev.data[k] === 'number' ? (ev.data[k] as number) : null);
  const len = num('len');
  const offset = num('offset');
  if (len !== null) j.len = len;
  if (offset !== null) j.offset = offset;
  switch (ev.event) {
    case 'BLOCK_JOB_READY':
      if (j.ended === null) j.ready = true;
      return true;
    case 'BLOCK_JOB_COMPLETED': {
      const err = typeof ev.data.error === 'string' ? ev.data.error : null;
      j.ended ??= err !== null ? 'failed' : 'completed';
      if (err !== null) j.error ??= err;
      return true;
    }
    case 'BLOCK_JOB_CANCELLED':
      j.ended ??= 'cancelled';
      return true;
    case 'BLOCK_JOB_ERROR':
      j.error ??= `${typeof ev.data.operation === 'string' ? ev.data.operation : 'I/O'} error (action ${typeof ev.data.action === 'string' ? ev.data.action : '?'})`;
      return true;
    default:
      return false;
  }
}

/** Folds a query-block-jobs answer into the jobs (for events that may have been missed). */
export function applyJobQuery(jobs: readonly JobState[], infos: readonly BlockJobInfo[]): void {
  for (const j of jobs) {
    const i = infos.find((x) => x.device === j.jobId);
    if (!i) continue;
    j.len = i.len;
    j.offset = i.offset;
    if (i.ready && j.ended === null) j.ready = true;
    if (i.error !== undefined) j.error ??= i.error;
    if (i.status === 'concluded' && j.ended === null) j.ended = i.error !== undefined ? 'failed' : 'completed';
  }
}

// ---- the source's driver

export type DiskMirrorEvent =
  | { event: 'disk-mirror-started'; disks: { key: string; file: string; jobId: string }[]; nbd: string }
  | { event: 'disk-mirror-ready'; readyMs: number; bytes: number }
  | { event: 'disk-mirror-failed'; error: { code: string; message: string } };

export interface DiskMirrorOptions {
  readonly disks: readonly string[] | 'all';
  readonly nbd: NbdAddress;
  readonly copyMode?: CopyMode;
  readonly onEvent?: (e: DiskMirrorEvent) => void;
}

/** What the disk copy cost, for the switchover figures. */
export interface DiskMirrorFigures {
  /** From start() until every job was ready, ms. */
  readyMs: number | null;
  /** Completing the jobs with the vCPUs stopped (drain + end without pivot), ms: part of the pause. */
  completeMs: number | null;
  /** Bytes the mirror jobs copied to the target (QEMU's job offsets at the end). */
  bytes: number | null;
}

const EVENTS = new Set(['BLOCK_JOB_READY', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED', 'BLOCK_JOB_ERROR']);

/** The mirrors of one source VM, from presync start until they complete at the switchover or are cancelled. */
export class DiskMirror {
  readonly figures: DiskMirrorFigures = { readyMs: null, completeMs: null, bytes: null };
  readonly jobs: JobState[];
  #off: (() => void) | undefined;
  #t0 = performance.now();
  #waiters: (() => void)[] = [];
  #done = false;

  private constructor(readonly qmp: QmpClient, readonly plans: readonly MirrorPlan[], readonly o: DiskMirrorOptions) {
    this.jobs = plans.map((p) => ({ jobId: p.jobId, ready: false, ended: null, error: null, len: 0, offset: 0 }));
  }

  /** Adds the NBD client nodes and starts one mirror per disk. Undoes what it did if a step fails. */
  static async start(qmp: QmpClient, o: DiskMirrorOptions): Promise<DiskMirror> {
    const disks = selectDisks(vmDisks(await qmp.execute('query-block')), o.disks);
    const m = new DiskMirror(qmp, planMirrors(disks, o.nbd, o.copyMode), o);
    m.#off = qmp.onEvent((ev) => m.#onEvent(ev));
    try {
      for (const p of m.plans) {
        await qmp.execute('blockdev-add', p.blockdevAdd).catch((e: unknown) => {
          throw new PresyncError(ErrorCodes.DISK_MIRROR, `cannot reach the target's NBD export "${p.disk.key}" at ${o.nbd.host}:${o.nbd.port} (${(e as Error).message}); is "presync qemu serve --nbd-listen" running there?`, { cause: e });
        });
        await qmp.execute('blockdev-mirror', p.mirror).catch((e: unknown) => {
          throw new PresyncError(ErrorCodes.DISK_MIRROR, `cannot mirror disk "${p.disk.key}" (${(e as Error).message})`, { cause: e });
        });
      }
    } catch (e) {
      await m.cancel();
      throw e;
    }
    o.onEvent?.({ event: 'disk-mirror-started', disks: m.plans.map((p) => ({ key: p.disk.key, file: p.disk.file, jobId: p.jobId })), nbd: `${o.nbd.host}:${o.nbd.port}` });
    return m;
  }

  /** Every job is ready (source and target in sync, guest writes copied as they happen). */
  get ready(): boolean {
    return this.failure === null && this.jobs.every((j) => j.ready && j.ended === null);
  }

  /** Why the copy cannot go on, once a job failed or ended on its own; null while all is well. */
  get failure(): PresyncError | null {
    if (this.#done) return null;
    const bad = this.jobs.find((j) => j.ended !== null || (j.error !== null && !j.ready));
    if (!bad) return null;
    const plan = this.plans.find((p) => p.jobId === bad.jobId)!;
    return new PresyncError(ErrorCodes.DISK_MIRROR, `the mirror of disk "${plan.disk.key}" ${bad.ended ?? 'failed'}${bad.error ? `: ${bad.error}` : ''}; nothing was handed over, the source keeps its disk`);
  }

  /** Resolves once every job is ready; rejects when one fails, the QMP connection ends or the time is up. */
  async whenReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      applyJobQuery(this.jobs, await this.qmp.execute('query-block-jobs'));
      this.#noteReady();
      const f = this.failure;
      if (f) throw f;
      if (this.ready) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new PresyncError(ErrorCodes.TIMEOUT, `disk mirrors not ready after ${timeoutMs} ms (${this.#progress()})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(500, left));
        function done(): void {
          clearTimeout(t);
          resolve();
        }
        this.#waiters.push(done);
      });
    }
  }

  /**
   * With the source vCPUs stopped: ends each ready job without pivot (it
   * drains what is still dirty first), then removes the NBD client nodes.
   * Afterwards the target's disks equal the source's.
   */
  async complete(timeoutMs = 30_000): Promise<void> {
    const t0 = performance.now();
    const f = this.failure;
    if (f) throw f;
    if (!this.ready) throw new PresyncError(ErrorCodes.DISK_MIRROR, `disk mirrors not ready at the switchover (${this.#progress()})`);
    for (const j of this.jobs) await this.qmp.execute('block-job-cancel', { device: j.jobId });
    await this.#waitEnded(timeoutMs);
    const notSynced = this.jobs.find((j) => j.ended !== 'completed');
    if (notSynced) {
      throw new PresyncError(ErrorCodes.DISK_MIRROR, `the mirror job ${notSynced.jobId} ended ${notSynced.ended ?? 'in an unknown state'}${notSynced.error ? `: ${notSynced.error}` : ''} instead of completing`);
    }
    this.figures.bytes = this.jobs.reduce((a, j) => a + j.offset, 0);
    this.#done = true;
    await this.#dropNodes();
    this.figures.completeMs = Math.round((performance.now() - t0) * 10) / 10;
  }

  /** Stops every job still running (force: no drain) and removes the NBD client nodes. Best effort; never throws. */
  async cancel(timeoutMs = 15_000): Promise<void> {
    for (const j of this.jobs) {
      if (j.ended === null) await this.qmp.execute('block-job-cancel', { device: j.jobId, force: true }).catch(() => undefined);
    }
    await this.#waitEnded(timeoutMs).catch(() => undefined);
    await this.#dropNodes();
    this.#done = true;
    this.#off?.();
    this.#off = undefined;
  }

  /** Stops following QEMU's events (after a completed copy). */
  dispose(): void {
    this.#off?.();
    this.#off = undefined;
  }

  async #waitEnded(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.qmp.isClosed) throw new PresyncError(ErrorCodes.QEMU, 'the source QEMU went away while its disk mirrors ended');
      const infos = await this.qmp.execute('query-block-jobs');
      applyJobQuery(this.jobs, infos);
      // A job that left query-block-jobs has ended (its event says how).
      const live = this.jobs.filter((j) => j.ended === null && infos.some((i) => i.device === j.jobId));
      for (const j of this.jobs) if (j.ended === null && !infos.some((i) => i.device === j.jobId)) j.ended = 'cancelled';
      if (live.length === 0) return;
      if (Date.now() > deadline) throw new PresyncError(ErrorCodes.TIMEOUT, `disk mirror jobs still running ${timeoutMs} ms after they were told to end`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, 20);
        function done(): void {
          clearTimeout(t);
          resolve();
        }
        this.#waiters.push(done);
      });
    }
  }

  async #dropNodes(): Promise<void> {
    // A concluded job (auto-dismiss is on by default) is gone by now; the node then has no user left.
    for (const p of this.plans) await this.qmp.execute('blockdev-del', { 'node-name': p.nbdNode }).catch(() => undefined);
  }

  #onEvent(ev: QmpEvent): void {
    if (!EVENTS.has(ev.event) || !applyJobEvent(this.jobs, ev)) return;
    this.#noteReady();
    const f = this.failure;
    if (f) this.o.onEvent?.({ event: 'disk-mirror-failed', error: f.toJSON() });
    const w = this.#waiters;
    this.#waiters = [];
    for (const done of w) done();
  }

  #noteReady(): void {
    if (this.figures.readyMs !== null || !this.ready) return;
    this.figures.readyMs = Math.round(performance.now() - this.#t0);
    this.o.onEvent?.({ event: 'disk-mirror-ready', readyMs: this.figures.readyMs, bytes: this.jobs.reduce((a, j) => a + j.offset, 0) });
  }

  #progress(): string {
    return this.jobs.map((j) => `${j.jobId} ${j.ready ? 'ready' : `${j.offset}/${j.len} bytes`}`).join(', ');
  }
}

// ---- the target's exports

/** Target (started with -incoming): serves every writable disk (or those named) over NBD, writable, for the source's mirrors. */
export async function startNbdExports(qmp: QmpClient, listen: NbdAddress, wanted: readonly string[] | 'all' = 'all'): Promise<VmDisk[]> {
  const disks = selectDisks(vmDisks(await qmp.execute('query-block')), wanted);
  try {
    await qmp.execute('nbd-server-start', { addr: { type: 'inet', data: { host: listen.host, port: String(listen.port) } } });
  } catch (e) {
    throw new PresyncError(ErrorCodes.DISK_MIRROR, `the target QEMU cannot serve NBD on ${listen.host}:${listen.port} (${(e as Error).message})`, { cause: e });
  }
  for (const x of planExports(disks)) {
    // QEMU activates an exported node that the incoming migration opened inactive, so it can be written before the handover.
    await qmp.execute('block-export-add', { type: 'nbd', id: x.id, 'node-name': x.nodeName, writable: true, name: x.name });
  }
  return disks;
}

/** Target: ends the NBD server and its exports; called before the guest runs, so nothing else writes its disks. */
export async function stopNbdExports(qmp: QmpClient): Promise<void> {
  await qmp.execute('nbd-server-stop');
}

// ---- the disk check

/** What a disk held at a moment both guests were stopped. */
export interface DiskDigest {
  readonly key: string;
  readonly bytes: number;
  readonly sha256: string;
}

const CHUNK = 1 << 20;
const ZERO_CHUNK = Buffer.alloc(CHUNK);

/**
 * SHA-256 over a disk file's contents as the guest sees them (a hole reads
 * as zeros). All-zero 1 MiB chunks, most of a fresh or sparse disk, are
 * recorded by their index only: comparing with zeros is several times
 * cheaper than hashing, and both ends digest the same way. Runs with the
 * guest stopped.
 */
export function digestDiskFile(key: string, path: string): DiskDigest {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let off = 0, i = 0; off < size; i++) {
      const n = readSync(fd, buf, 0, Math.min(CHUNK, size - off), off);
      off += hashChunk(h, buf, n, i, path, off, size);
    }
    return { key, bytes: size, sha256: h.digest('hex') };
  } finally {
    closeSync(fd);
  }
}

/** Adds chunk `i` (its first `n` bytes of `buf`) to the digest: an all-zero chunk by its index only. Returns n. */
function hashChunk(h: Hash, buf: Buffer, n: number, i: number, path: string, off: number, size: number): number {
  if (n <= 0) throw new PresyncError(ErrorCodes.IMAGE, `${path} ended at byte ${off} of ${size} while it was hashed`);
  const chunk = buf.subarray(0, n);
  const zero = chunk.equals(ZERO_CHUNK.subarray(0, n));
  const tag = Buffer.alloc(9);
  tag[0] = zero ? 0x5a : 0x44;
  tag.writeUInt32BE(Math.floor(i / 2 ** 32), 1);
  tag.writeUInt32BE(i >>> 0, 5);
  h.update(tag);
  if (!zero) h.update(chunk);
  return n;
}

/**
 * digestDiskFile with the reads on libuv's thread pool: the caller's event
 * loop goes on meanwhile (presync's final copy and verify overlap the
 * hashing). Same digest as digestDiskFile.
 */
export async function digestDiskFileAsync(key: string, path: string): Promise<DiskDigest> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let off = 0, i = 0; off < size; i++) {
      const { bytesRead: n } = await fh.read(buf, 0, Math.min(CHUNK, size - off), off);
      off += hashChunk(h, buf, n, i, path, off, size);
    }
    return { key, bytes: size, sha256: h.digest('hex') };
  } finally {
    await fh.close();
  }
}

export const DISK_DIGESTS_FORMAT = 'presync-disks/1';

/** The source's digests, carried to the target as the migration's device-state blob. */
export function encodeDiskDigests(d: readonly DiskDigest[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ format: DISK_DIGESTS_FORMAT, disks: d }));
}

/** The source's digests from the device-state blob; null when it carries none (no --verify-disk). */
export function decodeDiskDigests(blob: Uint8Array): DiskDigest[] | null {
  if (blob.length === 0) return null;
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(blob));
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || (v as { format?: unknown }).format !== DISK_DIGESTS_FORMAT) return null;
  const disks = (v as { disks?: unknown }).disks;
  if (!Array.isArray(disks)) return null;
  return disks.filter(
    (d): d is DiskDigest => typeof d === 'object' && d !== null && typeof d.key === 'string' && typeof d.bytes === 'number' && typeof d.sha256 === 'string',
  );
}

/** The disks whose digests differ (or that one side lacks): empty when the target's disks equal the source's. */
export function compareDiskDigests(source: readonly DiskDigest[], target: readonly DiskDigest[]): string[] {
  const out: string[] = [];
  for (const s of source) {
    const t = target.find((x) => x.key === s.key);
    if (!t) out.push(`${s.key}: the target has no such disk`);
    else if (t.bytes !== s.bytes) out.push(`${s.key}: ${t.bytes} bytes on the target, ${s.bytes} on the source`);
    else if (t.sha256 !== s.sha256) out.push(`${s.key}: contents differ`);
  }
  return out;
}
