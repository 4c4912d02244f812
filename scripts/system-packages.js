/**
 * The Debian packages a script needs, and one way to get the missing ones,
 * for test/preflight.js (`npm test`) and scripts/build-binary.js.
 *
 * A need is a package with a file it installs: { pkg, file } (an absolute
 * path) or { pkg, tool } (a program looked up on PATH). ensurePackages()
 * takes the whole list at once, so that a fresh machine learns everything it
 * lacks in one go:
 *   - as root it runs `apt-get update` and one `apt-get install` of every
 *     missing package (apt's output goes to stderr: stdout may be a TAP stream);
 *   - otherwise it throws an error naming the one `sudo apt-get install -y ...`
 *     command for all of them.
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

function onPath(tool) {
  return (process.env.PATH || '').split(path.delimiter).some((dir) => {
    try {
      fs.accessSync(path.join(dir, tool), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Whether a need is met on this machine. */
function isPresent(need) {
  return need.tool !== undefined ? onPath(need.tool) : fs.existsSync(need.file);
}

/** The packages of the unmet needs, each once, in the order given. */
function missingPackages(needs, present = isPresent) {
  return [...new Set(needs.filter((need) => !present(need)).map((need) => need.pkg))];
}

/** The one apt-get command that installs `pkgs`. */
function installCommand(pkgs) {
  return `apt-get install -y ${pkgs.join(' ')}`;
}

/** apt-get update, then one apt-get install of `pkgs`; throws if either fails. */
function aptInstall(pkgs) {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', ...pkgs]]) {
    const r = spawnSync('apt-get', args, { stdio: ['ignore', 2, 2], env });
    if (r.status !== 0) throw new Error(`'apt-get ${args.join(' ')}' failed${r.error ? `: ${r.error.message}` : ''}`);
  }
}

/**
 * Makes sure every need is met, as described at the top. `whoNeeds` starts
 * the messages ("the tests need"). Options, for tests: `present` (need ->
 * boolean), `root` (boolean), `install` (pkgs -> void), `log` (line -> void).
 */
function ensurePackages(needs, whoNeeds, options = {}) {
  const {
    log = (line) => process.stderr.write(`${line}\n`),
    present = isPresent,
    root = process.getuid?.() === 0,
    install = aptInstall,
  } = options;
  const missing = missingPackages(needs, present);
  if (missing.length === 0) return;
  if (!root) throw new Error(`${whoNeeds} ${missing.join(', ')}: run 'sudo ${installCommand(missing)}'`);
  log(`${whoNeeds} ${missing.join(', ')}: installing them (${installCommand(missing)})`);
  install(missing);
}

module.exports = { ensurePackages, installCommand, missingPackages };
