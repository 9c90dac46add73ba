import { readFileSync } from 'node:fs';
import { nativePageHash } from '../native/pagehash.ts';

/** The package's version, read from its package.json (src/ and dist/ sit at the same depth). */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

/** Which page hasher runs: the optional native addon, or the WebAssembly fallback. */
export function pageHasher(): 'native' | 'wasm' {
  return nativePageHash ? 'native' : 'wasm';
}

/** `presync 0.1.0 (page hasher: native)` */
export function versionLine(): string {
  return `presync ${packageVersion()} (page hasher: ${pageHasher()})\n`;
}
