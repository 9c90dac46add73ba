/**
 * One set of workload names for every command: the short names `text`,
 * `audio`, `movie` (as `bench qemu` spells its guest programs) and the
 * simulator's long names (`text-editing`) are both accepted.
 */
const SIM_NAMES: Readonly<Record<string, string>> = { text: 'text-editing' };
const SHORT_NAMES: Readonly<Record<string, string>> = { 'text-editing': 'text' };

/** The simulator's name for a workload (`text` → `text-editing`); other names pass unchanged. */
export function canonicalWorkload(name: string): string {
  return SIM_NAMES[name] ?? name;
}

/** The short name (`text-editing` → `text`); other names pass unchanged. */
export function shortWorkload(name: string): string {
  return SHORT_NAMES[name] ?? name;
}
