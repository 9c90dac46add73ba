import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { run } from '../../src/cli/main.ts';
import {
  applyJobEvent,
  applyJobQuery,
  compareDiskDigests,
  decodeDiskDigests,
  digestDiskFile,
  digestDiskFileAsync,
  encodeDiskDigests,
  parseNbdAddress,
  planExports,
  planMirrors,
  qemuName,
  selectDisks,
  vmDisks,
  type JobState,
} from '../../src/qemu/disk-mirror.ts';
import type { BlockInfo } from '../../src/qemu/qmp-commands.ts';
import { returnValidators } from '../../src/qemu/qmp-commands.ts';
import type { QmpEvent } from '../../src/qemu/qmp.ts';

const BLOCKS: BlockInfo[] = [
  { device: 'disk0', qdev: '/machine/peripheral/vd0/virtio-backend', inserted: { nodeName: '#block123', file: '/var/vm/a.raw', ro: false, drv: 'raw' } },
  { device: '', qdev: 'vd1', inserted: { nodeName: 'data1', file: '/var/vm/b.qcow2', ro: false, drv: 'qcow2' } },
  { device: 'cd0', qdev: 'ide0', inserted: { nodeName: '#block9', file: '/iso/x.iso', ro: true, drv: 'raw' } },
  { device: 'floppy0', qdev: undefined, inserted: undefined },
];

test('vmDisks keys a -drive by its id and a -blockdev by its node name; empty drives are skipped', () => {
  assert.deepEqual(
    vmDisks(BLOCKS).map((d) => [d.key, d.nodeName, d.readOnly]),
    [
      ['disk0', '#block123', false],
      ['data1', 'data1', false],
      ['cd0', '#block9', true],
    ],
  );
});

test('selectDisks: all = the writable disks; named ones must be writable disks of the VM', () => {
  const disks = vmDisks(BLOCKS);
  assert.deepEqual(selectDisks(disks, 'all').map((d) => d.key), ['disk0', 'data1']);
  assert.deepEqual(selectDisks(disks, ['data1']).map((d) => d.key), ['data1']);
  assert.throws(() => selectDisks(disks, ['cd0']), (e: Error & { code?: string }) => e.code === 'PRESYNC_ERR_BAD_ARGUMENT' && /writable disks: disk0, data1/.test(e.message));
  assert.throws(() => selectDisks([], 'all'), /no writable disk/);
});

test('planMirrors: one NBD client node and one full mirror per disk, into the export named by the disk key', () => {
  const [p] = planMirrors(selectDisks(vmDisks(BLOCKS), ['disk0']), { host: '10.0.0.2', port: 7072 });
  assert.deepEqual(p.blockdevAdd, { driver: 'nbd', 'node-name': 'presync-nbd-disk0', server: { type: 'inet', host: '10.0.0.2', port: '7072' }, export: 'disk0' });
  assert.equal(p.mirror.device, '#block123');
  assert.equal(p.mirror.target, 'presync-nbd-disk0');
  assert.equal(p.mirror.sync, 'full');
  assert.equal(p.mirror['copy-mode'], 'background');
  assert.deepEqual(planExports(selectDisks(vmDisks(BLOCKS), 'all')), [
    { id: 'presync-export-disk0', nodeName: '#block123', name: 'disk0' },
    { id: 'presync-export-data1', nodeName: 'data1', name: 'data1' },
  ]);
  assert.equal(qemuName('presync-nbd', 'a b/c'), 'presync-nbd-a_b_c');
});

test('parseNbdAddress takes HOST:PORT and [V6]:PORT, refuses the rest with the flag name', () => {
  assert.deepEqual(parseNbdAddress('10.0.0.2:7072', 'nbd'), { host: '10.0.0.2', port: 7072 });
  assert.deepEqual(parseNbdAddress('[::1]:10809', 'nbd'), { host: '::1', port: 10809 });
  for (const bad of ['target', 'target:0', 'target:70000', '', undefined]) assert.throws(() => parseNbdAddress(bad, 'nbd'), /--nbd must be HOST:PORT/);
});

function ev(event: string, data: Record<string, string | number>): QmpEvent {
  return { event, data, timestamp: { seconds: 0, microseconds: 0 } };
}

test('job events: ready, completed without error (synced), completed with error (failed), cancelled; other jobs ignored', () => {
  const jobs: JobState[] = ['presync-mirror-a', 'presync-mirror-b'].map((jobId) => ({ jobId, ready: false, ended: null, error: null, len: 0, offset: 0 }));
  assert.equal(applyJobEvent(jobs, ev('BLOCK_JOB_READY', { device: 'someone-else', len: 1, offset: 1 })), false);
  applyJobEvent(jobs, ev('BLOCK_JOB_READY', { device: 'presync-mirror-a', len: 100, offset: 100 }));
  assert.equal(jobs[0].ready, true);
  assert.equal(jobs[0].offset, 100);
  applyJobEvent(jobs, ev('BLOCK_JOB_ERROR', { device: 'presync-mirror-b', operation: 'write', action: 'report' }));
  applyJobEvent(jobs, ev('BLOCK_JOB_COMPLETED', { device: 'presync-mirror-b', len: 100, offset: 40, error: 'Input/output error' }));
  assert.equal(jobs[1].ended, 'failed');
  assert.match(jobs[1].error ?? '', /write error/);
  applyJobEvent(jobs, ev('BLOCK_JOB_COMPLETED', { device: 'presync-mirror-a', len: 120, offset: 120 }));
  assert.equal(jobs[0].ended, 'completed');
  // A later event does not rewrite how a job ended.
  applyJobEvent(jobs, ev('BLOCK_JOB_CANCELLED', { device: 'presync-mirror-a', len: 120, offset: 120 }));
  assert.equal(jobs[0].ended, 'completed');
});

test('job query: readiness and a concluded job are taken from query-block-jobs (missed events)', () => {
  const jobs: JobState[] = [{ jobId: 'j', ready: false, ended: null, error: null, len: 0, offset: 0 }];
  const infos = returnValidators['query-block-jobs']([
    { type: 'mirror', device: 'j', len: 10, offset: 10, busy: false, paused: false, speed: 0, 'io-status': 'ok', ready: true, status: 'ready', 'auto-finalize': true, 'auto-dismiss': true },
  ]);
  applyJobQuery(jobs, infos);
  assert.equal(jobs[0].ready, true);
  applyJobQuery(jobs, [{ ...infos[0], status: 'concluded', error: 'No space left on device' }]);
  assert.equal(jobs[0].ended, 'failed');
});

test('query-block validator keeps device, node name, file and read-only', () => {
  const b = returnValidators['query-block']([
    { device: 'disk0', qdev: 'vd0', locked: false, removable: false, type: 'unknown', inserted: { 'node-name': '#block1', file: '/a.raw', ro: false, drv: 'raw', encrypted: false } },
    { device: 'ide1-cd0', locked: false, removable: true, type: 'unknown' },
  ]);
  assert.deepEqual(b, [
    { device: 'disk0', qdev: 'vd0', inserted: { nodeName: '#block1', file: '/a.raw', ro: false, drv: 'raw' } },
    { device: 'ide1-cd0', qdev: undefined, inserted: undefined },
  ]);
});

test('disk digests: a sparse file hashes as its zeros; one changed byte is seen; the blob round-trips', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'presync-disk-'));
  try {
    const sparse = join(dir, 'a.raw');
    const full = join(dir, 'b.raw');
    writeFileSync(sparse, '');
    execFileSync('truncate', ['-s', String(3 << 20), sparse]);
    writeFileSync(full, Buffer.alloc(3 << 20));
    const a = digestDiskFile('disk0', sparse);
    assert.deepEqual(a, digestDiskFile('disk0', full));
    assert.equal(a.bytes, 3 << 20);
    const changed = Buffer.alloc(3 << 20);
    changed[(2 << 20) + 7] = 1;
    writeFileSync(full, changed);
    const b = digestDiskFile('disk0', full);
    assert.deepEqual(await digestDiskFileAsync('disk0', full), b, 'the async digest is the same digest');
    assert.deepEqual(compareDiskDigests([a], [b]), ['disk0: contents differ']);
    assert.deepEqual(compareDiskDigests([a], [a]), []);
    assert.deepEqual(compareDiskDigests([a], []), ['disk0: the target has no such disk']);
    assert.deepEqual(compareDiskDigests([a], [{ ...a, bytes: 1 }]), [`disk0: 1 bytes on the target, ${3 << 20} on the source`]);
    assert.deepEqual(decodeDiskDigests(encodeDiskDigests([a, b])), [a, b]);
    assert.equal(decodeDiskDigests(new Uint8Array(0)), null);
    assert.equal(decodeDiskDigests(new TextEncoder().encode('not json')), null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

async function cli(argv: string[]): Promise<{ code: number; err: string }> {
  let err = '';
  const code = await run(argv, { out: () => undefined, err: (t) => (err += t) });
  return { code, err };
}

test('qemu migrate disk flags: bad usage gets one line and exit 2 before touching a VM', async () => {
  const base = ['qemu', 'migrate', '--qmp', '/nonexistent.qmp', '--to', '127.0.0.1:1', '--qemu-uri', 'tcp:127.0.0.1:2', '--secret-file', '/nonexistent', '--launch-when-ready'];
  const cases: [string[], RegExp][] = [
    [['--nbd', '127.0.0.1:7072'], /--nbd needs --copy-storage/],
    [['--verify-disk'], /--verify-disk needs --copy-storage/],
    [['--copy-storage', 'all'], /--copy-storage needs --nbd HOST:PORT/],
    [['--copy-storage', 'all', '--nbd', 'target'], /--nbd must be HOST:PORT/],
    [['--copy-storage', 'all', '--nbd', 'target:7072', '--copy-mode', 'fast'], /--copy-mode must be background or write-blocking/],
    [['--copy-storage', ',', '--nbd', 'target:7072'], /--copy-storage must be "all" or a comma-separated list/],
  ];
  for (const [extra, re] of cases) {
    // The secret file is read before the disk flags: give a readable one.
    const dir = mkdtempSync(join(tmpdir(), 'presync-disk-cli-'));
    try {
      const secret = join(dir, 's');
      writeFileSync(secret, 'disk-flags-secret-0123456789abcdef\n');
      const argv = base.map((a) => (a === '/nonexistent' ? secret : a));
      const r = await cli([...argv, ...extra]);
      assert.equal(r.code, 2, `${extra.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
      assert.match(r.err, /^presync qemu: PRESYNC_ERR_BAD_ARGUMENT: /);
      assert.equal(r.err.trim().split('\n').length, 1, r.err);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});
