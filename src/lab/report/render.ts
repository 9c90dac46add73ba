import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { ErrorCodes, PresyncError } from '../../core/errors.ts';

/**
 * Server-side chart rendering: Vega-Lite → Vega → SVG with a headless View
 * (renderer "none": no canvas, no browser), and SVG → PNG with resvg.
 * vega's own logging is captured, never printed: library code stays quiet.
 */
export interface ChartWarnings {
  readonly warnings: string[];
}

function collectingLogger(into: string[]): vega.LoggerInterface {
  let level = vega.Warn;
  const logger: vega.LoggerInterface = {
    level(l?: number) {
      if (l === undefined) return level;
      level = l;
      return logger;
    },
    error(...args: readonly unknown[]) {
      into.push(`error: ${args.map(String).join(' ')}`);
      return logger;
    },
    warn(...args: readonly unknown[]) {
      into.push(args.map(String).join(' '));
      return logger;
    },
    info() {
      return logger;
    },
    debug() {
      return logger;
    },
  } as vega.LoggerInterface;
  return logger;
}

export async function renderSvg(spec: TopLevelSpec, into: ChartWarnings = { warnings: [] }): Promise<string> {
  const logger = collectingLogger(into.warnings);
  try {
    const compiled = compile(spec, { logger }).spec;
    const view = new vega.View(vega.parse(compiled), { renderer: 'none', logger, logLevel: vega.Warn });
    try {
      return await view.toSVG();
    } finally {
      view.finalize();
    }
  } catch (e) {
    throw new PresyncError(ErrorCodes.INTERNAL, `rendering chart "${typeof spec.title === 'string' ? spec.title : 'chart'}" failed: ${(e as Error).message}`, { cause: e });
  }
}

/** PNG of an SVG at `scale` × its size, text in the system's sans-serif (DejaVu Sans on Debian). */
export function svgToPng(svg: string, scale = 2): Buffer {
  const r = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: scale },
    background: 'white',
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans' },
  });
  return r.render().asPng();
}
