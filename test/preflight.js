#!/usr/bin/env node
// Checks the system packages the test suite needs (a real Buildbot master and
// worker, socat for serial ptys, git for the Git step, openssl for TLS
// certificates, what building the single binary needs, and what running it
// the way its systemd unit does needs). As root it installs the missing ones;
// otherwise it stops with the one command to run (scripts/system-packages.js).
// Never skips.
'use strict';
const { TARGETS, buildNeeds } = require('../scripts/build-binary');
const { ensurePackages } = require('../scripts/system-packages');

const needs = [
  { file: '/usr/bin/buildbot', pkg: 'buildbot' },
  { file: '/usr/bin/buildbot-worker', pkg: 'buildbot-worker' },
  { file: '/usr/bin/socat', pkg: 'socat' },
  { file: '/usr/bin/git', pkg: 'git' },
  { file: '/usr/bin/openssl', pkg: 'openssl' },
  // test/binary-*.test.ts build every target, then run the binary as its unit does
  ...TARGETS.flatMap(buildNeeds),
  { file: '/usr/bin/systemd-analyze', pkg: 'systemd' },
  { file: '/usr/bin/setpriv', pkg: 'util-linux' },
];
try {
  ensurePackages(needs, 'the tests need', { log: (line) => process.stderr.write(`preflight: ${line}\n`) });
} catch (error) {
  process.stderr.write(`preflight: ${error.message}\n`);
  process.exit(1);
}
