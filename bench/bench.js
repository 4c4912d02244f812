#!/usr/bin/env node
// The benchmarks' runner (npm run bench): bundles bench/run.ts and
// bench/scale-hub.ts and bench/hostile-hub.ts with esbuild into bench/.build/ (two levels below the
// checkout, so test/helpers find the repository root from there) and runs
// run.js with the arguments given. npm run bench type-checks bench/ first.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const here = __dirname;
require('esbuild').buildSync({
  entryPoints: [path.join(here, 'run.ts'), path.join(here, 'scale-hub.ts'), path.join(here, 'hostile-hub.ts')],
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
