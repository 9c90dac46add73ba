import * as zlib from 'node:zlib';

/**
 * CRC-32 (IEEE 802.3, the zlib/PNG polynomial). Node 20.15+ ships a native
 * `zlib.crc32`; older 20.x lines do not, so a table-driven fallback keeps the
 * wire format identical everywhere.
 */
export type Crc32 = (data: Uint8Array, previous?: number) => number;

const TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Portable implementation; exported so tests can pin it to the native one. */
export function crc32Table(data: Uint8Array, previous = 0): number {
  let c = (previous ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

type NativeCrc = (data: Uint8Array, value?: number) => number;
const native: NativeCrc | undefined = (zlib as unknown as { crc32?: NativeCrc }).crc32;

export const hasNativeCrc32: boolean = typeof native === 'function';

/** CRC-32 of `data`, continuing from `previous` (the CRC of the bytes before it). */
export const crc32: Crc32 = hasNativeCrc32
  ? // zlib's crc32() restarts at 0 when handed a NULL buffer, which is what a view
    // on a zero-length ArrayBuffer becomes: an empty part must not reset the CRC.
    (data, previous = 0) => (data.length === 0 ? previous >>> 0 : (native as NativeCrc)(data, previous) >>> 0)
  : crc32Table;
