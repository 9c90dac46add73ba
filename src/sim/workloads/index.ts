import { ErrorCodes, PresyncError } from '../../core/errors.ts';
import type { Workload, WorkloadFactory, WorkloadParams } from '../workload.ts';
import { AUDIO_OPTIONS, createAudio } from './audio.ts';
import { createHotspot, HOTSPOT_OPTIONS } from './hotspot.ts';
import { createIdle, IDLE_OPTIONS } from './idle.ts';
import { createMovie, MOVIE_OPTIONS } from './movie.ts';
import type { OptionSpecs } from './options.ts';
import { createTextEditing, TEXT_EDITING_OPTIONS } from './text-editing.ts';
import { createUniform, UNIFORM_OPTIONS } from './uniform.ts';

export interface WorkloadInfo {
  readonly name: string;
  readonly create: WorkloadFactory;
  readonly options: OptionSpecs;
  /**
   * Documented mean of distinct dirty pages per 1 s window with the default
   * options in a 256 MiB guest (65 536 × 4 KiB pages), as [low, high].
   */
  readonly dirtyPagesPerSec: readonly [number, number];
}

/**
 * Every simulated workload. Dirty rates (distinct pages per 1 s window,
 * defaults, 256 MiB guest): idle ≈ 11, audio ≈ 70, text-editing ≈ 300,
 * hotspot ≈ 1 770, uniform ≈ 1 970, movie ≈ 4 400. Each module's doc comment
 * derives its number from the write pattern.
 */
export const WORKLOADS: Readonly<Record<string, WorkloadInfo>> = {
  'text-editing': { name: 'text-editing', create: createTextEditing, options: TEXT_EDITING_OPTIONS, dirtyPagesPerSec: [200, 400] },
  audio: { name: 'audio', create: createAudio, options: AUDIO_OPTIONS, dirtyPagesPerSec: [50, 100] },
  movie: { name: 'movie', create: createMovie, options: MOVIE_OPTIONS, dirtyPagesPerSec: [4000, 4800] },
  idle: { name: 'idle', create: createIdle, options: IDLE_OPTIONS, dirtyPagesPerSec: [5, 25] },
  uniform: { name: 'uniform', create: createUniform, options: UNIFORM_OPTIONS, dirtyPagesPerSec: [1850, 2050] },
  hotspot: { name: 'hotspot', create: createHotspot, options: HOTSPOT_OPTIONS, dirtyPagesPerSec: [1650, 1900] },
};

export const WORKLOAD_NAMES: readonly string[] = Object.keys(WORKLOADS);

/** Builds a named workload; unknown names and options get PRESYNC_ERR_BAD_ARGUMENT. */
export function createWorkload(name: string, params: WorkloadParams): Workload {
  const info = Object.hasOwn(WORKLOADS, name) ? WORKLOADS[name] : undefined;
  if (!info) {
    throw new PresyncError(ErrorCodes.BAD_ARGUMENT, `unknown workload "${name}"; known workloads: ${WORKLOAD_NAMES.join(', ')}`);
  }
  return info.create(params);
}

export { measureDirtyRate, type DirtyRate } from './measure.ts';
