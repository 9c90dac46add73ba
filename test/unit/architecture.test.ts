/**
 * The layering docs/architecture.md describes, checked on the sources: no
 * import runs from a lower floor to a higher one, no import circle, the
 * migrate commands load neither the simulator nor the lab, and no function
 * in the engine or the simulator runs past ~150 lines.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SRC = join(ROOT, 'src');

/** Floors, lowest first; a module may import from its own floor's directory or from lower floors. */
const FLOORS: readonly (readonly string[])[] = [['core'], ['native'], ['wire', 'transport'], ['guest'], ['engine'], ['qemu', 'sim'], ['lab'], ['api'], ['cli'], ['index.ts']];

function floorOf(dir: string): number {
  const i = FLOORS.findIndex((f) => f.includes(dir));
  assert.ok(i >= 0, `src/${dir}/ is on no floor: add it to FLOORS here and to docs/architecture.md`);
  return i;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

interface Imports {
  /** Loaded with the module (static imports, type-only ones included: they still tie the files together). */
  readonly eager: string[];
  /** import('…') expressions: loaded when that code runs. */
  readonly lazy: string[];
}

function importsOf(file: string): Imports {
  const text = readFileSync(file, 'utf8');
  const eager: string[] = [];
  const lazy: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+'(\.[^']+)'/gm)) eager.push(resolve(dirname(file), m[1]));
  for (const m of text.matchAll(/\bimport\(\s*'(\.[^']+)'\s*\)/g)) lazy.push(resolve(dirname(file), m[1]));
  return { eager, lazy };
}

const files = sources(SRC);
const graph = new Map(files.map((f) => [f, importsOf(f)]));
const dirOf = (f: string): string => relative(SRC, f).split('/')[0];
const rel = (f: string): string => relative(ROOT, f);

test('no import runs from a lower floor to a higher one', () => {
  const bad: string[] = [];
  for (const [f, { eager, lazy }] of graph) {
    const from = dirOf(f);
    for (const t of [...eager, ...lazy]) {
      const to = dirOf(t);
      if (to === from) continue;
      if (floorOf(to) >= floorOf(from)) bad.push(`${rel(f)} -> ${rel(t)}`);
    }
  }
  assert.deepEqual(bad, []);
});

test('no import circle', () => {
  // Tarjan's strongly connected components over the eager imports.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const circles: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v)?.eager ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        comp.push(rel(w));
      } while (w !== v);
      if (comp.length > 1) circles.push(comp.sort());
    }
  };
  for (const f of files) if (!idx.has(f)) visit(f);
  assert.deepEqual(circles, []);
});

function closure(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    todo.push(...(graph.get(f)?.eager ?? []));
  }
  return seen;
}

test('migrate, qemu migrate and serve load neither the simulator nor the lab', () => {
  for (const cmd of ['migrate.ts', 'qemu.ts', 'serve.ts']) {
    const loaded = [...closure(join(SRC, 'cli/commands', cmd))].map(rel).filter((f) => f.startsWith('src/sim/') || f.startsWith('src/lab/'));
    assert.deepEqual(loaded, [], `src/cli/commands/${cmd}`);
  }
});

/** Functions (declarations, methods, arrow functions) longer than `max` lines in the .ts files under `dir`. */
async function longFunctions(dir: string, max: number): Promise<string[]> {
  const ts = (await import('typescript')).default;
  const long: string[] = [];
  for (const file of sources(join(SRC, dir))) {
    const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
    const visit = (n: import('typescript').Node): void => {
      if (ts.isFunctionLike(n) && 'body' in n && n.body) {
        const from = sf.getLineAndCharacterOfPosition(n.getStart(sf)).line;
        const to = sf.getLineAndCharacterOfPosition(n.getEnd()).line;
        if (to - from + 1 > max) {
          const name = 'name' in n && n.name && ts.isIdentifier(n.name as import('typescript').Node) ? (n.name as import('typescript').Identifier).text : '(anonymous)';
          long.push(`${rel(file)}:${from + 1} ${name} (${to - from + 1} lines)`);
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return long;
}

test('no function in the engine or the simulator runs past 150 lines', async () => {
  assert.deepEqual([...(await longFunctions('engine', 150)), ...(await longFunctions('sim', 150))], []);
});
