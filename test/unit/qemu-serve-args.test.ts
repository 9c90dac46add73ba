/**
 * `presync qemu serve`'s target flags, refused before any QEMU starts: one
 * line, a stable code, exit 2 for bad usage.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLI } from '../../src/lab/cli-entry.ts';
import { scratchDir } from '../helpers/scratch.ts';

const dir = scratchDir('presync-serve-args-');
const secret = join(dir, 'secret');
writeFileSync(secret, randomBytes(32).toString('base64'));
const BASE = ['qemu', 'serve', '--listen', '127.0.0.1:0', '--secret-file', secret, '--qemu-listen', '127.0.0.1:0'];
const ram = join(dir, 'vm.ram');
const QEMU = ['qemu-system-x86_64', '-machine', 'pc,memory-backend=ram0', '-m', '64M', '-object', `memory-backend-file,id=ram0,size=64M,mem-path=${ram},share=on`];

function serve(args: string[]): { status: number | null; line: string } {
  const r = spawnSync(process.execPath, [CLI, ...BASE, ...args], { encoding: 'utf8', timeout: 60_000 });
  // One line saying what is wrong (bad usage may add the command's usage line after it).
  const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('usage: '));
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  return { status: r.status, line: lines[0] };
}

test('--image must be the RAM backend\'s mem-path: never two files', () => {
  const r = serve(['--image', join(dir, 'other.ram'), '--', ...QEMU]);
  assert.equal(r.status, 2);
  assert.match(r.line, /^presync qemu: PRESYNC_ERR_QEMU_CMDLINE: --image .*other\.ram is not the RAM backend's mem-path .*vm\.ram/);
  assert.equal(existsSync(`${ram}.presync`), false, 'nothing written');
});

test('machine flags do not mix with a command line after --, nor -- with --attach-qmp', () => {
  let r = serve(['--kernel', '/k', '--', ...QEMU]);
  assert.equal(r.status, 2);
  assert.match(r.line, /PRESYNC_ERR_BAD_ARGUMENT: --kernel does not go with a QEMU command line after --/);
  r = serve(['--attach-qmp', join(dir, 'x.qmp'), '--', ...QEMU]);
  assert.equal(r.status, 2);
  assert.match(r.line, /PRESYNC_ERR_BAD_ARGUMENT: --attach-qmp and a QEMU command line after -- are two ways/);
  r = serve(['--attach-qmp', join(dir, 'x.qmp'), '--image', ram, '--memory', '64M']);
  assert.equal(r.status, 2);
  assert.match(r.line, /--memory does not go with --attach-qmp/);
});

test('no target QEMU at all, and an empty command after --, are bad usage', () => {
  let r = serve(['--image', ram]);
  assert.equal(r.status, 2);
  assert.match(r.line, /PRESYNC_ERR_BAD_ARGUMENT: give the target QEMU: -- qemu-system-x86_64 ARGS…, --attach-qmp SOCKET, or --kernel/);
  r = serve(['--']);
  assert.equal(r.status, 2);
  assert.match(r.line, /PRESYNC_ERR_QEMU_CMDLINE: no QEMU command after "--"/);
});

test('a mem-path that is a directory is refused (QEMU would make a nameless file there)', () => {
  const d = join(dir, 'hugepages');
  mkdirSync(d);
  const r = serve(['--', 'qemu-system-x86_64', '-machine', 'pc,memory-backend=ram0', '-object', `memory-backend-file,id=ram0,size=64M,mem-path=${d},share=on`]);
  assert.equal(r.status, 2);
  assert.match(r.line, /PRESYNC_ERR_QEMU_CMDLINE: mem-path .*hugepages of RAM backend ram0 is a directory/);
});

test('--attach-qmp to a socket no QEMU listens on: one line, exit 1', () => {
  const r = serve(['--attach-qmp', join(dir, 'nobody.qmp'), '--image', ram]);
  assert.equal(r.status, 1);
  assert.match(r.line, /^presync qemu: PRESYNC_ERR_/);
});

test('a handed-over RAM file named by the command line is refused before any QEMU maps it (PRESYNC_ERR_IMAGE_EXISTS, exit 1)', () => {
  const used = join(dir, 'handed.ram');
  writeFileSync(used, '');
  writeFileSync(`${used}.presync`, JSON.stringify({ format: 'presync-image/1', imageId: 'vm', pageSize: 4096, pageCount: 16384, state: 'valid' }) + '\n');
  const r = serve(['--', 'qemu-system-x86_64', '-machine', 'pc,memory-backend=ram0', '-object', `memory-backend-file,id=ram0,size=64M,mem-path=${used},share=on`]);
  assert.equal(r.status, 1);
  assert.match(r.line, /PRESYNC_ERR_IMAGE_EXISTS: .*handed\.ram was handed over/);
});
