#!/usr/bin/env node
'use strict';
const { runMain } = require('../build/wire/cli-support.js');
runMain('tether-master', () => require('../build/master-plugin/cli.js').main(process.argv.slice(2)), process.argv.includes('--verbose'));
