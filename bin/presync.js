#!/usr/bin/env node
// A checkout's entry point: runs the TypeScript sources through tsx, so an edit
// takes effect without a build. Installed packages run dist/cli/main.js instead
// (package.json "bin"), and tests spawn the built CLI (src/lab/cli-entry.ts).
const { register } = await import('tsx/esm/api');
register();
await import('../src/cli/main.ts');
