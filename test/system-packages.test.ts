/**
 * What a fresh machine lacks for `npm run build:binary` (and `npm test`) is
 * named in one apt-get command, or installed in one go as root
 * (scripts/system-packages.js). Nothing is uninstalled: the unit tests say
 * which needs are unmet, and the script runs as an unprivileged user with
 * the tools off its PATH.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { TARGETS, buildNeeds } from '../scripts/build-binary';
import { type Need, ensurePackages } from '../scripts/system-packages';
import { REPO_ROOT, tempDir } from './helpers/support';

const BUILD_NEEDS = TARGETS.flatMap(buildNeeds);
const WHO = 'building the single binary needs';

/** The packages of every `apt-get install` command in `message`, one list per command. */
function aptCommands(message: string): string[][] {
  return [...message.matchAll(/apt-get install -y ([^']*)/g)].map((m) => m[1].split(' '));
}

/** What ensurePackages throws when not root and the needs in `missing` (tools or files) are unmet. */
function messageFor(t: Test, missing: string[]): string {
  const unmet = new Set(missing);
  try {
    ensurePackages(BUILD_NEEDS, WHO, {
      present: (need: Need) => !unmet.has(need.tool ?? need.file),
      root: false,
      install: () => t.fail('nothing is installed when not root'),
    });
  } catch (error) {
    return (error as Error).message;
  }
  return '';
}

t.test('missing cross tools and libraries: one apt-get command with every package, each once', async (t) => {
  const message = messageFor(t, [
    'aarch64-linux-gnu-strip', 'arm-linux-gnueabihf-strip', 'qemu-aarch64', 'qemu-arm', '/usr/arm-linux-gnueabihf/lib/libatomic.so.1',
  ]);
  const commands = aptCommands(message);
  t.equal(commands.length, 1, `one apt-get command: ${message}`);
  t.same(commands[0]?.sort(), ['binutils-aarch64-linux-gnu', 'binutils-arm-linux-gnueabihf', 'libatomic1-armhf-cross', 'qemu-user']);
  t.match(message, /^building the single binary needs .*: run 'sudo apt-get install -y [^']*'$/);
});

t.test('nothing there: every package of every target in the one command', async (t) => {
  const message = messageFor(t, BUILD_NEEDS.map((need) => need.tool ?? need.file));
  const commands = aptCommands(message);
  t.equal(commands.length, 1, 'one apt-get command');
  t.same(commands[0]?.sort(), [...new Set(BUILD_NEEDS.map((need) => need.pkg))].sort(), 'each package once');
  for (const pkg of ['binutils', 'binutils-aarch64-linux-gnu', 'binutils-arm-linux-gnueabihf', 'libc6-arm64-cross', 'libc6-armhf-cross']) {
    t.ok(commands[0]?.includes(pkg), pkg);
  }
});

t.test('everything there: no message', async (t) => {
  t.equal(messageFor(t, []), '');
});

t.test('as root the missing packages are installed at once, and said so', async (t) => {
  const installs: string[][] = [];
  const log: string[] = [];
  ensurePackages(BUILD_NEEDS, WHO, {
    present: (need: Need) => need.tool !== 'qemu-arm' && need.tool !== 'arm-linux-gnueabihf-strip',
    root: true,
    install: (pkgs) => installs.push(pkgs),
    log: (line) => log.push(line),
  });
  t.same(installs, [['binutils-arm-linux-gnueabihf', 'qemu-user']], 'one install of both');
  t.match(log.join('\n'), 'installing them (apt-get install -y binutils-arm-linux-gnueabihf qemu-user)');
});

t.test('npm run build:binary without the tools, not as root: stops at once with the one command', async (t) => {
  // An unprivileged user (setpriv, from util-linux: test/preflight.js, when the tests run as root) with an empty PATH.
  const empty = await tempDir(t, 'tether-no-tools-');
  // The script is copied where that user can read it: a checkout under /root, or in a 0700
  // directory, is out of its reach (it would fail with "Cannot find module").
  const checkout = await tempDir(t, 'tether-script-copy-');
  fs.mkdirSync(path.join(checkout, 'scripts'));
  for (const file of ['build-binary.js', 'system-packages.js']) fs.copyFileSync(path.join(REPO_ROOT, 'scripts', file), path.join(checkout, 'scripts', file));
  for (const dir of [empty, checkout, path.join(checkout, 'scripts')]) fs.chmodSync(dir, 0o755);
  const asUser = process.getuid?.() === 0 ? ['/usr/bin/setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'] : [];
  // env -u: tap's process tracking puts its loader (in this checkout's node_modules) into NODE_OPTIONS of every child.
  const argv = [...asUser, '/usr/bin/env', '-u', 'NODE_OPTIONS', process.execPath, path.join(checkout, 'scripts', 'build-binary.js'), 'linux-x64', 'linux-arm64', 'linux-armv7l'];
  const r = spawnSync(argv[0], argv.slice(1), {
    cwd: checkout,
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: empty, TETHER_BINARY_CACHE: path.join(empty, 'cache') }, // nothing of tap's NODE_OPTIONS either
  });
  if (!t.equal(r.status, 1, 'exit 1')) t.comment(r.error?.message ?? r.stderr);
  const commands = aptCommands(r.stderr);
  t.equal(commands.length, 1, 'one apt-get command');
  for (const pkg of ['binutils', 'binutils-aarch64-linux-gnu', 'binutils-arm-linux-gnueabihf', 'qemu-user']) {
    t.ok(commands[0]?.includes(pkg), `it names ${pkg}`);
  }
  t.notMatch(r.stderr, /fetching|MB, Node/, 'nothing was built or fetched');
});
