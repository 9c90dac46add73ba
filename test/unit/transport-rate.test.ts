import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes, PresyncError } from '../../src/core/errors.ts';
import { formatAddress, parseAddress } from '../../src/transport/address.ts';
import { formatRate, parseDuration, parseRate } from '../../src/transport/rate.ts';

function badArgument(pattern?: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof PresyncError, String(e));
    assert.equal(e.code, ErrorCodes.BAD_ARGUMENT);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

describe('parseRate', () => {
  const good: Array<[string, number]> = [
    ['1gbit', 125_000_000],
    ['100mbit', 12_500_000],
    ['500kbit', 62_500],
    ['8bit', 1],
    ['1 Gbit', 125_000_000],
    ['10Mbit/s', 1_250_000],
    ['10Mb/s', 1_250_000],
    ['1gibit', 2 ** 30 / 8],
    ['50MB/s', 50_000_000],
    ['800kB/s', 800_000],
    ['1.5GiB/s', 1.5 * 2 ** 30],
    ['64KiB/s', 65_536],
    ['2TB/s', 2e12],
    ['1250000', 1_250_000],
    ['62.5', 62.5],
    ['  3MiB/s  ', 3 * 2 ** 20],
  ];
  for (const [text, want] of good) {
    it(`reads ${JSON.stringify(text)} as ${want} bytes/s`, () => assert.equal(parseRate(text), want));
  }

  it('rejects mbps-style units as ambiguous, naming both readings', () => {
    assert.throws(() => parseRate('10mbps'), badArgument(/ambiguous.*10mbit.*10MB\/s/));
    assert.throws(() => parseRate('10Mbps'), badArgument(/ambiguous/));
    assert.throws(() => parseRate('10MBps'), badArgument(/ambiguous/));
  });

  it('rejects garbage and says what is accepted', () => {
    for (const bad of ['', '   ', 'fast', 'gbit', '1 g', '1gb', '50MB', '1xbit', '-5mbit', '0', '0gbit', '1e9', '1.2.3mbit', '10 MB /s']) {
      assert.throws(() => parseRate(bad), badArgument(/accepted forms: .*1gbit/), `accepted ${JSON.stringify(bad)}`);
    }
  });

  it('formats rates in bits per second', () => {
    assert.equal(formatRate(125_000_000), '1 Gbit/s');
    assert.equal(formatRate(12_500_000), '100 Mbit/s');
    assert.equal(formatRate(10), '80 bit/s');
    assert.equal(parseRate(formatRate(125_000_000).replace(' ', '').replace('/s', '').toLowerCase()), 125_000_000);
  });
});

describe('parseDuration', () => {
  const good: Array<[string, number]> = [
    ['30s', 30_000],
    ['500ms', 500],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1m30s', 90_000],
    ['1.5s', 1500],
    ['0s', 0],
    [' 250ms ', 250],
  ];
  for (const [text, want] of good) {
    it(`reads ${JSON.stringify(text)} as ${want} ms`, () => assert.equal(parseDuration(text), want));
  }

  it('rejects a bare number, since s and ms are both plausible', () => {
    assert.throws(() => parseDuration('5000'), badArgument(/unit is required/));
  });

  it('rejects garbage and says what is accepted', () => {
    for (const bad of ['', 's', '5 s', '-1s', '5sec', '1d', '1m 30s', 'soon', '5s5']) {
      assert.throws(() => parseDuration(bad), badArgument(/accepted forms: .*500ms/), `accepted ${JSON.stringify(bad)}`);
    }
  });
});

describe('parseAddress / formatAddress', () => {
  it('reads host:port, [v6]:port and :port', () => {
    assert.deepEqual(parseAddress('10.0.0.2:7070'), { host: '10.0.0.2', port: 7070 });
    assert.deepEqual(parseAddress('[::1]:0'), { host: '::1', port: 0 });
    assert.deepEqual(parseAddress(':9000'), { host: '127.0.0.1', port: 9000 });
    assert.deepEqual(parseAddress('target.example:443'), { host: 'target.example', port: 443 });
  });

  it('round-trips through formatAddress', () => {
    for (const a of [{ host: '127.0.0.1', port: 1 }, { host: '::1', port: 65535 }]) {
      assert.deepEqual(parseAddress(formatAddress(a)), a);
    }
  });

  it('rejects bad addresses', () => {
    for (const bad of ['', 'host', 'host:', 'host:65536', '::1:80', '[nope]:80', 'a b:1', 'h:-1']) {
      assert.throws(() => parseAddress(bad), badArgument(/host:port/), `accepted ${JSON.stringify(bad)}`);
    }
  });
});
