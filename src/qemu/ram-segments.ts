/**
 * A QEMU target with several RAM backends (e.g. one memory-backend-file per
 * NUMA node) as the target agent's image of several files: each backend's
 * file is the segment of its id (QEMU's migration matches RAM blocks by
 * backend id, and so does presync), of the backend's size.
 */
import { resolve } from 'node:path';
import type { SegmentFile } from '../core/image-layout.ts';
import { claimImageGeometry } from './qemu-target.ts';

export interface RamBackendFile {
  readonly id: string;
  readonly memPath: string;
  readonly bytes: number;
}

/** The agent's segments for these backends, or undefined for one backend (a one-file image, as always). */
export function targetSegments(backends: readonly RamBackendFile[]): SegmentFile[] | undefined {
  if (backends.length < 2) return undefined;
  return backends.map((b) => ({ id: b.id, path: resolve(b.memPath), bytes: b.bytes }));
}

/** claimImageGeometry for every file: a file handed over to a VM is refused (unless forced), and each says its size. */
export function claimSegments(segments: readonly SegmentFile[], opts: { force?: boolean } = {}): void {
  for (const s of segments) claimImageGeometry(s.path, { pageSize: 4096, pageCount: (s.bytes ?? 0) / 4096 }, opts);
}
