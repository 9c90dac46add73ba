/**
 * The bench's 1 Gbit/s link: two network namespaces joined by veth with tbf
 * on both ends. Real namespaces, a real TCP transfer across the link, and
 * nothing left behind after close().
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { createShapedLink, netnsUnavailable } from '../../src/lab/netns.ts';

const unavailable = netnsUnavailable();

function namespaces(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n !== '');
}

function links(): string {
  return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
}

/** Sends `bytes` from nsA to a server in nsB over TCP; resolves with what the server counted. */
async function transfer(link: ReturnType<typeof createShapedLink>, bytes: number): Promise<number> {
  const server = spawn(
    link.exec(link.nsB)[0],
    [...link.exec(link.nsB).slice(1), process.execPath, '-e',
      `const s=require('net').createServer(c=>{let n=0;c.on('data',d=>n+=d.length);c.on('end',()=>{console.log('got '+n);s.close()})});` +
      `s.listen(0,${JSON.stringify(link.addrB)},()=>console.log('port '+s.address().port))`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const lines = createInterface({ input: server.stdout! })[Symbol.asyncIterator]();
  try {
    const first = (await lines.next()).value as string;
    const port = Number(/^port (\d+)$/.exec(first)?.[1]);
    assert.ok(port > 0, `server in ${link.nsB} printed "${first}"`);
    execFileSync(
      link.exec(link.nsA)[0],
      [...link.exec(link.nsA).slice(1), process.execPath, '-e',
        `const c=require('net').connect(${port},${JSON.stringify(link.addrB)},()=>{c.end(Buffer.alloc(${bytes},7))});c.on('error',e=>{console.error(e.message);process.exit(1)})`],
      { stdio: ['ignore', 'ignore', 'inherit'], timeout: 30_000 },
    );
    const last = (await lines.next()).value as string;
    return Number(/^got (\d+)$/.exec(last)?.[1]);
  } finally {
    if (server.exitCode === null) server.kill('SIGKILL');
  }
}

test('a shaped veth link between two fresh namespaces carries TCP and disappears on close', { skip: unavailable && `network namespaces unavailable: ${unavailable}`, timeout: 60_000 }, async () => {
  const before = namespaces();
  const link = createShapedLink({ rate: '1gbit' });
  try {
    assert.notEqual(link.nsA, link.nsB);
    assert.ok(namespaces().includes(link.nsA) && namespaces().includes(link.nsB), 'both namespaces exist');
    assert.match(link.addrA, /^10\.\d+\.\d+\.\d+$/);
    for (const ns of [link.nsA, link.nsB]) {
      const qdisc = execFileSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'show'], { encoding: 'utf8' });
      assert.match(qdisc, /qdisc tbf .* rate 1Gbit/, `tbf on the veth end in ${ns}: ${qdisc}`);
    }
    // The veth ends live inside the namespaces, not in the host's.
    assert.ok(!links().includes(link.nsA.slice(-6)), 'no veth end in the root namespace');
    assert.equal(await transfer(link, 8 << 20), 8 << 20, 'every byte crossed the link');
  } finally {
    link.close();
  }
  const after = namespaces();
  assert.ok(!after.includes(link.nsA) && !after.includes(link.nsB), `namespaces removed: ${after.join(', ')}`);
  assert.deepEqual(after.filter((n) => !before.includes(n) && n.startsWith('presync-')), []);
  assert.ok(!links().includes(link.nsA.slice(-6)), 'the veth pair is gone');
  link.close(); // idempotent
});

test('netnsUnavailable names the reason, or nothing when namespaces can be made', () => {
  const why = netnsUnavailable();
  if (process.getuid?.() !== 0) assert.equal(why, 'not running as root');
  else assert.ok(why === undefined || /not found/.test(why), String(why));
});
