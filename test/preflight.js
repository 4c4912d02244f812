#!/usr/bin/env node
// Checks the system packages the test suite needs (a real Buildbot master and
// worker, socat for serial ptys, git for the Git step, openssl for TLS certificates,
// binutils and qemu-user for the single binary). As root it installs the
// missing ones; otherwise it stops with the one command to run. Never skips.
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');

const needs = [
  { file: '/usr/bin/buildbot', pkg: 'buildbot' },
  { file: '/usr/bin/buildbot-worker', pkg: 'buildbot-worker' },
  { file: '/usr/bin/socat', pkg: 'socat' },
  { file: '/usr/bin/git', pkg: 'git' },
  { file: '/usr/bin/openssl', pkg: 'openssl' },
  // the single binary (scripts/build-binary.js, test/binary-*.test.ts): strip,
  // the ARM cross strips, qemu-user with the ARM libraries, and for running it
  // the way its systemd unit does: systemd-analyze, unshare and setpriv
  { file: '/usr/bin/strip', pkg: 'binutils' },
  { file: '/usr/bin/aarch64-linux-gnu-strip', pkg: 'binutils-aarch64-linux-gnu' },
  { file: '/usr/bin/arm-linux-gnueabihf-strip', pkg: 'binutils-arm-linux-gnueabihf' },
  { file: '/usr/bin/qemu-aarch64', pkg: 'qemu-user' },
  { file: '/usr/aarch64-linux-gnu/lib/libc.so.6', pkg: 'libc6-arm64-cross' },
  { file: '/usr/aarch64-linux-gnu/lib/libstdc++.so.6', pkg: 'libstdc++6-arm64-cross' },
  { file: '/usr/arm-linux-gnueabihf/lib/libc.so.6', pkg: 'libc6-armhf-cross' },
  { file: '/usr/arm-linux-gnueabihf/lib/libstdc++.so.6', pkg: 'libstdc++6-armhf-cross' },
  { file: '/usr/arm-linux-gnueabihf/lib/libatomic.so.1', pkg: 'libatomic1-armhf-cross' },
  { file: '/usr/bin/systemd-analyze', pkg: 'systemd' },
  { file: '/usr/bin/setpriv', pkg: 'util-linux' },
];
const missing = needs.filter((n) => !existsSync(n.file)).map((n) => n.pkg);
if (missing.length === 0) process.exit(0);

const command = `apt-get install -y ${missing.join(' ')}`;
if (process.getuid && process.getuid() === 0) {
  process.stderr.write(`preflight: installing ${missing.join(', ')}\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  const r = spawnSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: 'inherit', env });
  if (r.status === 0) process.exit(0);
  process.stderr.write(`preflight: '${command}' failed\n`);
  process.exit(1);
}
process.stderr.write(`preflight: the tests need ${missing.join(', ')}: run 'sudo ${command}'\n`);
process.exit(1);
