import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { defaultBurstBytes, TokenBucket } from '../../src/transport/token-bucket.ts';

describe('TokenBucket (injected clock)', () => {
  it('starts full: a burst goes out at once, the next byte waits for the refill', () => {
    const b = new TokenBucket({ rateBytesPerSec: 1000, burstBytes: 500, nowMs: 0 });
    assert.equal(b.tokens, 500);
    assert.equal(b.take(500, 0), 0);
    assert.equal(b.take(100, 0), 100); // 100 bytes of debt at 1000 B/s
    assert.equal(b.tokens, -100);
  });

  it('refills at the rate, capped at the burst', () => {
    const b = new TokenBucket({ rateBytesPerSec: 1000, burstBytes: 500, nowMs: 0 });
    b.take(500, 0);
    assert.equal(b.tokensAt(250), 250);
    assert.equal(b.tokensAt(10_000), 500);
    assert.equal(b.take(250, 250), 0);
    assert.equal(b.tokens, 0);
  });

  it('lets a request larger than the burst through after the right wait', () => {
    const b = new TokenBucket({ rateBytesPerSec: 2000, burstBytes: 100, nowMs: 0 });
    assert.equal(b.take(1100, 0), 500); // 1000 bytes beyond the burst at 2000 B/s
  });

  it('queues takers in order: each inherits the debt before it', () => {
    const b = new TokenBucket({ rateBytesPerSec: 1000, burstBytes: 100, nowMs: 0 });
    assert.equal(b.take(100, 0), 0);
    assert.equal(b.take(100, 0), 100);
    assert.equal(b.take(100, 0), 200);
    assert.equal(b.take(100, 150), 150); // 150 ms later, 150 bytes repaid of 300
  });

  it('never releases more than burst + rate * elapsed over a long run', () => {
    const rate = 12_500; // bytes/s
    const burst = 4096;
    const b = new TokenBucket({ rateBytesPerSec: rate, burstBytes: burst, nowMs: 0 });
    let now = 0;
    let sent = 0;
    // A greedy sender: take 1500 bytes, wait as told, repeat.
    for (let i = 0; i < 1000; i++) {
      now += b.take(1500, now);
      sent += 1500;
      assert.ok(sent <= burst + (rate * now) / 1000 + 1e-6, `sent ${sent} by ${now} ms`);
    }
    // ...and it is not slower than the rate either.
    assert.ok(sent >= (rate * now) / 1000);
  });

  it('delayFor reports the wait without debiting', () => {
    const b = new TokenBucket({ rateBytesPerSec: 1000, burstBytes: 100, nowMs: 0 });
    assert.equal(b.delayFor(300, 0), 200);
    assert.equal(b.tokensAt(0), 100);
    assert.equal(b.delayFor(50, 0), 0);
  });

  it('a clock stepping back neither mints tokens nor forgets debt', () => {
    const b = new TokenBucket({ rateBytesPerSec: 1000, burstBytes: 100, nowMs: 1000 });
    b.take(300, 1000);
    assert.equal(b.take(0, 500), 200);
    assert.equal(b.tokens, -200);
  });

  it('setRate keeps what was earned and applies the new rate from then on', () => {
    const b = new TokenBucket({ rateBytesPerSec: 1000, burstBytes: 1000, nowMs: 0 });
    b.take(1000, 0);
    b.setRate(4000, 100, 1000); // 100 tokens earned at the old rate
    assert.equal(b.tokens, 100);
    assert.equal(b.tokensAt(200), 500);
    assert.equal(b.rateBytesPerSec, 4000);
  });

  it('default burst is 10 ms of traffic, at least 16 KiB', () => {
    assert.equal(defaultBurstBytes(125_000_000), 1_250_000);
    assert.equal(defaultBurstBytes(1000), 16 * 1024);
    assert.equal(new TokenBucket({ rateBytesPerSec: 1000, nowMs: 0 }).burstBytes, 16 * 1024);
  });

  it('rejects nonsense with PRESYNC_ERR_BAD_ARGUMENT', () => {
    const bad = (e: unknown): boolean => e instanceof PresyncError && e.code === ErrorCodes.BAD_ARGUMENT;
    assert.throws(() => new TokenBucket({ rateBytesPerSec: 0, nowMs: 0 }), bad);
    assert.throws(() => new TokenBucket({ rateBytesPerSec: Infinity, nowMs: 0 }), bad);
    assert.throws(() => new TokenBucket({ rateBytesPerSec: 10, burstBytes: 0, nowMs: 0 }), bad);
    const b = new TokenBucket({ rateBytesPerSec: 10, nowMs: 0 });
    assert.throws(() => b.take(-1, 0), bad);
    assert.throws(() => b.take(Number.NaN, 0), bad);
  });
});
