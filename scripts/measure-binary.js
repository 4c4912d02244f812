#!/usr/bin/env node
/**
 * Figures for docs/binary.md: each binary's size, the
 * x64 binary's time from spawn to connected (the hub's 'agent' event) and its
 * resident memory once connected and idle; the ARM binaries' times under
 * qemu-user (emulated: not what a board does).
 *
 * Usage: npm run build && npm run build:binary && node scripts/measure-binary.js [RUNS]
 *
 * VmRSS counts the executable's file pages the process has mapped (RssFile)
 * besides its own memory (RssAnon). How many file pages get mapped depends on
 * how the kernel holds the file in its page cache: a file just written in one
 * go (as postject writes dist/) sits in large folios that get mapped whole, so
 * the binary is measured both as built and as a `cp` copy (as installed).
 */
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { TARGETS, binaryPath, runner } = require('./build-binary');

const ROOT = path.resolve(__dirname, '..');
const { TetherHub } = require(path.join(ROOT, 'build', 'master-plugin', 'hub.js'));

const runs = Number(process.argv[2] ?? 15);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mb = (kb) => (kb / 1024).toFixed(1);

function status(pid) {
  const out = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(VmRSS|RssAnon|RssFile|VmHWM):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** CPU time (user + system, all threads) the process has used so far, in ms (10 ms steps). */
function cpuMs(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime: fields 14 and 15, in 1/100 s
}

/** Starts `argv` as an agent against a fresh hub; resolves with ms to connected, and memory after `idleMs`. */
async function once(argv, dir, idleMs) {
  const hub = new TetherHub({ workers: { board: 'measure' } });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const args = ['--master', `tcp://127.0.0.1:${address.port}`, '--name', 'board', '--secret-file', path.join(dir, 'secret'), '--basedir', path.join(dir, 'basedir')];
  const started = process.hrtime.bigint();
  const child = spawn(argv[0], [...argv.slice(1), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await Promise.race([hub.waitForAgent('board', 120_000), exited.then(() => Promise.reject(new Error(`exited: ${stderr}`)))]);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const cpu = cpuMs(child.pid);
    let mem;
    if (idleMs) {
      await new Promise((r) => setTimeout(r, idleMs));
      mem = status(child.pid);
    }
    return { ms, cpu, mem };
  } finally {
    child.kill('SIGTERM');
    await exited;
    await hub.close();
  }
}

async function measure(label, argv, dir, n, idleMs) {
  const first = await once(argv, dir, idleMs); // also warms the page cache
  const times = [];
  const cpus = [];
  for (let i = 0; i < n; i++) {
    const r = await once(argv, dir, 0);
    times.push(r.ms);
    cpus.push(r.cpu);
  }
  const m = first.mem;
  const memText = m ? `; idle ${idleMs / 1000} s: VmRSS ${mb(m.VmRSS)} MB (RssAnon ${mb(m.RssAnon)} + RssFile ${mb(m.RssFile)}), VmHWM ${mb(m.VmHWM)} MB` : '';
  console.log(`${label}: spawn to connected median ${median(times).toFixed(0)} ms (min ${Math.min(...times).toFixed(0)}, max ${Math.max(...times).toFixed(0)}, ${n} runs; CPU time by then: median ${median(cpus)} ms)${memText}`);
}

/** Wall time of `node -e 0` (this Node): how loaded the machine is. */
function bareNodeMs(n) {
  const { spawnSync } = require('node:child_process');
  const times = [];
  for (let i = 0; i < n; i++) {
    const started = process.hrtime.bigint();
    spawnSync(process.execPath, ['-e', '0']);
    times.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  return median(times);
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tether-measure-'));
  try {
    fs.writeFileSync(path.join(dir, 'secret'), 'measure\n');
    fs.mkdirSync(path.join(dir, 'basedir'));
    for (const target of TARGETS) {
      const file = binaryPath(target);
      console.log(`${path.relative(ROOT, file)}: ${fs.statSync(file).size} bytes (${(fs.statSync(file).size / 2 ** 20).toFixed(1)} MiB), Node ${target.node.version}`);
    }
    const x64 = TARGETS.find((t) => t.name === 'linux-x64');
    const copy = path.join(dir, 'tether-agent');
    fs.copyFileSync(binaryPath(x64), copy); // copy_file_range, as cp and install do
    fs.chmodSync(copy, 0o755);
    await measure('x64, a cp copy', [copy], dir, runs, 5000);
    await measure('x64, dist/ as built', [binaryPath(x64)], dir, runs, 5000);
    await measure(`Node ${process.version} + bin/tether-agent.js (for comparison)`, [process.execPath, path.join(ROOT, 'bin', 'tether-agent.js')], dir, runs, 5000);
    for (const target of TARGETS.filter((t) => t !== x64)) {
      await measure(`${target.name} under ${target.qemu.tool} (emulated)`, runner(target, binaryPath(target)), dir, 3, 0);
    }
    console.log(`for scale: \`node -e 0\` (Node ${process.version}) takes ${bareNodeMs(runs).toFixed(0)} ms here; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} on ${os.cpus().length} CPUs`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
