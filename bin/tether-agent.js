#!/usr/bin/env node
'use strict';
const { runMain } = require('../build/wire/cli-support.js');
runMain('tether-agent', () => require('../build/agent/cli.js').main(process.argv.slice(2)), process.argv.includes('--verbose'));
