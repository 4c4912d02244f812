#!/usr/bin/env node
'use strict';
// First: loading it takes TETHER_SECRET out of the environment before anything else runs.
require('../build/agent/environment.js');
const { runMain } = require('../build/wire/cli-support.js');
runMain('tether-agent', () => require('../build/agent/cli.js').main(process.argv.slice(2)), process.argv.includes('--verbose'));
