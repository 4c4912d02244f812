#!/usr/bin/env node
// The benchmarks' runner (npm run bench): bundles bench/run.ts, the
// processes it starts (bench/scale-hub.ts, bench/hostile-hub.ts and
// bench/node-relay.ts) with esbuild into bench/.build/ (two levels below the
// checkout, so test/helpers find the repository root from there) and runs
// run.js with the arguments given. npm run bench type-checks bench/ first.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const here = __dirname;
require('esbuild').buildSync({
  entryPoints: ['run.ts', 'scale-hub.ts', 'hostile-hub.ts', 'node-relay.ts'].map((f) => path.join(here, f)),
  outdir: path.join(here, '.build'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  packages: 'external',
  sourcemap: true,
  logLevel: 'warning',
});
const run = spawnSync(process.execPath, [path.join(here, '.build', 'run.js'), ...process.argv.slice(2)], {
  stdio: 'inherit',
});
process.exit(run.status ?? 1);
