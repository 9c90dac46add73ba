/**
 * A throwaway CA plus server and client certificates, made with the openssl
 * CLI in a temp dir, for tests, benches and demos of mutual TLS. Keys live
 * only in memory and the temp dir, which is removed; nothing is committed.
 * Not for production: validity is two days and keys are unencrypted.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCodes, PresyncError } from '../core/errors.ts';

const run = promisify(execFile);

export interface CertAndKey {
  readonly cert: string;
  readonly key: string;
}

export interface ThrowawayPki {
  /** The CA's certificate (give it as `ca` on both sides) and key. */
  readonly ca: CertAndKey;
  /** Leaf for 127.0.0.1, ::1 and localhost, usable as server and client. */
  readonly server: CertAndKey;
  readonly client: CertAndKey;
}

let available: boolean | undefined;

/** True if an `openssl` binary runs here. */
export function opensslAvailable(): boolean {
  if (available === undefined) {
    try {
      execFileSync('openssl', ['version'], { stdio: 'ignore' });
      available = true;
    } catch {
      available = false;
    }
  }
  return available;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export async function createThrowawayPki(): Promise<ThrowawayPki> {
  if (!opensslAvailable()) {
    throw new PresyncError(ErrorCodes.INTERNAL, 'throwaway PKI needs the openssl CLI (apt-get install openssl)');
  }
  const dir = await mkdtemp(join(tmpdir(), 'presync-pki-'));
  const p = (f: string): string => join(dir, f);
  try {
    await run('openssl', [
      'req', '-x509', ...EC, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2',
      '-subj', '/CN=presync throwaway test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    await writeFile(
      p('leaf.ext'),
      'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n' +
        'basicConstraints=CA:FALSE\n' +
        'keyUsage=critical,digitalSignature\n' +
        'extendedKeyUsage=serverAuth,clientAuth\n',
    );
    for (const name of ['server', 'client']) {
      await run('openssl', ['req', ...EC, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=presync ${name}`]);
      await run('openssl', [
        'x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.pem'), '-CAkey', p('ca.key'),
        '-CAcreateserial', '-out', p(`${name}.pem`), '-days', '2', '-extfile', p('leaf.ext'),
      ]);
    }
    const read = (f: string): Promise<string> => readFile(p(f), 'utf8');
    return {
      ca: { cert: await read('ca.pem'), key: await read('ca.key') },
      server: { cert: await read('server.pem'), key: await read('server.key') },
      client: { cert: await read('client.pem'), key: await read('client.key') },
    };
  } catch (e) {
    throw new PresyncError(ErrorCodes.INTERNAL, `throwaway PKI: openssl failed: ${(e as Error).message}`, { cause: e });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
