import { spawn } from 'node:child_process';
import { ErrorCodes, PresyncError } from '../core/errors.ts';
import type { HandoverHook } from './target-session.ts';

/**
 * Starts the application over the received image at handover: `sh -c CMD`
 * with PRESYNC_IMAGE (the image path) and PRESYNC_SESSION in its environment,
 * detached so it outlives the agent's session. The handover is confirmed once
 * the process has been spawned.
 */
export function commandHook(cmd: string): HandoverHook {
  return {
    start: ({ imagePath, sessionId }) =>
      new Promise<void>((resolve, reject) => {
        const child = spawn('/bin/sh', ['-c', cmd], {
          detached: true,
          stdio: 'ignore',
          env: { ...process.env, PRESYNC_IMAGE: imagePath, PRESYNC_SESSION: sessionId },
        });
        child.once('error', (e) => reject(new PresyncError(ErrorCodes.GUEST, `--on-handover command failed to start: ${e.message}`)));
        child.once('spawn', () => {
          child.unref();
          resolve();
        });
      }),
  };
}
