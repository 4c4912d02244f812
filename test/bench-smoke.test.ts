/**
 * The benchmarks still run: `npm run bench -- --quick --skip-buildbot` as a
 * child process (bench/bench.js, which bundles bench/ with esbuild), its
 * results written to a temporary directory (never bench/results.json), and
 * every section that ran has its figures. Only that they are there and are
 * numbers, never how fast: the benchmarks are not timed tests.
 */
import t, { type Test } from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Results } from '../bench/run';
import { REPO_ROOT, makeTempDir } from './helpers/support';

/** What a quick run without Buildbot measures (bench/run.ts SECTIONS less 'buildbot'). */
const SECTIONS = ['protocol', 'memory', 'scale', 'serial', 'noise', 'hostile'] as const;
const SERIAL_MODES = ['raw', 'raw-plain', 'text', 'text-plain'] as const;
/** What a run with the default results file writes, and a run with --out must not. */
const PAGE = path.join(REPO_ROOT, 'docs', 'performance.md');
/** Far more than a quick run takes (about 20 s on 2 cores). */
const RUN_TIMEOUT_MS = 300_000;

/**
 * The bench's command line and environment: as a user runs it, without tap's
 * variables and the process-tracking loader tap puts in NODE_OPTIONS (every
 * Node child would load it, and it costs each about 20 MB of RSS). tap's
 * child_process hook adds that loader back to any environment given to
 * spawn, so env(1) takes it out just before node starts.
 */
function benchCommand(args: string[], tmp: string): { command: string; argv: string[]; env: NodeJS.ProcessEnv } {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!/^(TAP|_TAPJS_)/.test(key)) env[key] = value;
  // Whatever the bench puts under os.tmpdir() goes here too, and goes with it.
  env.TMPDIR = tmp;
  const options = (process.env.NODE_OPTIONS ?? '').split(/\s+/).filter((o) => o !== '' && !o.includes('@tapjs/')).join(' ');
  const nodeOptions = options ? [`NODE_OPTIONS=${options}`] : ['-u', 'NODE_OPTIONS'];
  return { command: '/usr/bin/env', argv: [...nodeOptions, process.execPath, ...args], env };
}

function socatInstalled(): boolean {
  try {
    execFileSync('socat', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

type Figures = Record<string, unknown>;

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Each of `keys` of `obj` is a finite number above 0 (at or above 0 with `orZero`). */
function numbers(t: Test, where: string, obj: unknown, keys: string[], orZero = false): void {
  if (!obj || typeof obj !== 'object') {
    t.fail(`${where}: no figures (${JSON.stringify(obj)})`);
    return;
  }
  const figures = obj as Figures;
  for (const key of keys) {
    const v = figures[key];
    const ok = typeof v === 'number' && Number.isFinite(v) && (orZero ? v >= 0 : v > 0);
    t.ok(ok, `${where}: ${key} is a ${orZero ? 'non-negative' : 'positive'} number (${JSON.stringify(v)})`);
  }
}

/** A non-empty list of finite numbers above 0. */
function positiveList(t: Test, where: string, xs: unknown, length?: number): void {
  const ok = Array.isArray(xs) && xs.length > 0 && (length === undefined || xs.length === length) &&
    xs.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0);
  t.ok(ok, `${where}: ${length ?? 'some'} positive numbers (${JSON.stringify(xs)})`);
}

t.test('npm run bench -- --quick --skip-buildbot: every section has its figures', async (t) => {
  if (!fs.existsSync(path.join(REPO_ROOT, 'build', 'agent', 'cli.js'))) {
    t.fail('build/ is missing: run npm run build first (npm test compiles before it runs the tests)', { diagnostic: false });
    return;
  }
  if (!socatInstalled()) {
    t.fail("socat is missing (the bench's serial section runs over socat pty pairs): run 'apt-get install socat'", { diagnostic: false });
    return;
  }
  const dir = await makeTempDir('tether-bench-smoke-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const tmp = path.join(dir, 'tmp');
  fs.mkdirSync(tmp);
  const out = path.join(dir, 'results.json');
  const pageBefore = fs.readFileSync(PAGE, 'utf8');

  const started = Date.now();
  const args = [path.join('bench', 'bench.js'), '--quick', '--skip-buildbot', '--no-profile', `--out=${out}`];
  // Its own process group: a run that hangs is killed with every process it started.
  const { command, argv, env } = benchCommand(args, tmp);
  const bench = spawn(command, argv, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  bench.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  bench.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let timedOut = false;
  const killer = setTimeout(() => {
    timedOut = true;
    try {
      process.kill(-(bench.pid as number), 'SIGKILL');
    } catch {
      /* gone */
    }
  }, RUN_TIMEOUT_MS);
  const code = await new Promise<number | null>((resolve) => {
    bench.once('error', (error) => {
      stderr += `\nspawn error: ${error.message}`;
      resolve(null);
    });
    bench.once('close', (c) => resolve(c));
  });
  clearTimeout(killer);
  const seconds = Math.round((Date.now() - started) / 100) / 10;
  t.comment(`node ${args.join(' ')}: ${seconds} s`);
  t.notOk(timedOut, `the quick run ends within ${RUN_TIMEOUT_MS / 1000} s`);
  t.equal(code, 0, 'the bench exits 0 (no section failed)');
  if (code !== 0) t.comment(`stdout:\n${stdout.slice(-5000)}\nstderr:\n${stderr.slice(-10_000)}`);
  if (!fs.existsSync(out)) {
    t.fail(`the bench wrote no ${out}`);
    return;
  }

  const r = JSON.parse(fs.readFileSync(out, 'utf8')) as Results;
  t.same(r.errors, {}, 'no section failed');
  t.equal(r.meta.quick, true, 'a quick run');
  t.same(r.meta.sections, SECTIONS, 'the sections of a run without Buildbot');
  t.equal(r.buildbot, undefined, 'no Buildbot section');
  t.equal(fs.readFileSync(PAGE, 'utf8'), pageBefore, 'a run given --out leaves docs/performance.md alone');
  const page = fs.readFileSync(out.replace(/\.json$/, '.md'), 'utf8');
  t.match(page, /^# Performance\n/, 'the page went beside the results');
  t.match(page, /^## Running the bench$/m, 'the page says how to run the bench');
  t.match(page, /quick-run figures/, 'the page says its figures are a quick run\'s');
  t.match(page, /^Not run: buildbot\.$/m, 'the page names the section that did not run');
  for (const g of r.goals) t.ok(page.includes(`| ${g.goal} `), `the page's goals table has "${g.goal}"`);
  t.match(stdout, `results: ${path.relative(REPO_ROOT, out)}`, 'the bench names the results file it was given');
  t.match(stdout, /^## Goals/m, 'the bench printed its goals');

  t.test('protocol', async (t) => {
    const p = r.protocol;
    if (!p) return void t.fail('no protocol figures');
    numbers(t, 'throughput', p.throughput, [
      'bytes', 'reps', 'tetherMBps', 'catMBps', 'ratio', 'relayMBps', 'relayRatio', 'nodeRelayMBps', 'nodeHmacRelayMBps', 'nodeFramedRelayMBps', 'agentCpuMsPerMB', 'hubCpuMsPerMB',
    ]);
    t.match(page, /\| the same relay in Node \(bench\/node-relay\.ts\), from its first byte +\| [\d.]+ MB\/s; [\d.]+ MB\/s with HMAC-SHA256/, 'the page has the Node relay row');
    t.match(page, /\| the same Node relay in Tether frames of 64 KiB +\| [\d.]+ MB\/s: tag, CRC-32C and COBS[^|]*\| of the socat relay: [\d.]+×/, 'the page has the framed Node relay row');
    positiveList(t, 'throughput: Tether ms', p.throughput.tetherMs, p.throughput.reps);
    positiveList(t, 'throughput: cat ms', p.throughput.catMs, p.throughput.reps);
    for (const prefix of ['stat', 'shell', 'local']) {
      const rt = p.roundTrip.find((x) => x.command.startsWith(prefix));
      t.ok(rt, `a round trip of '${prefix}'`);
      numbers(t, `round trip ${rt?.command ?? prefix}`, rt, ['runs', 'medianMs', 'p99Ms', 'meanMs']);
    }
    t.ok(p.messages.length > 0, 'the wire bytes of the message types');
    for (const m of p.messages) {
      numbers(t, `message ${m.message}`, m, ['body', 'frame', 'overhead']);
      numbers(t, `message ${m.message}`, m, ['payload'], true);
    }
    for (const name of [/^output 80/, /^ACK$/, /^START/]) t.ok(p.messages.some((m) => name.test(m.message)), `the performance page's ${name} message size`);
  });

  t.test('memory', async (t) => {
    const m = r.memory;
    if (!m) return void t.fail('no memory figures');
    t.equal(m.agents[0]?.variant, 'node bin/tether-agent.js', 'the Node-run agent');
    t.equal(m.agents.length, m.binary.present ? 2 : 1, `the single binary too when it is built (${m.binary.present ? 'built' : 'not built'})`);
    for (const a of m.agents) numbers(t, `agent ${a.variant}`, a, ['idleMB', 'streamingMB', 'idleUssMB', 'streamingUssMB', 'streamedBytes', 'streamMBps']);
    t.ok(m.backlog.length >= 1, 'a paused session');
    for (const b of m.backlog) {
      numbers(t, `paused session ${b.variant}`, b, ['backlogBytes', 'beforeMB', 'afterMB', 'beforeUssMB', 'afterUssMB', 'peakMB']);
      numbers(t, `paused session ${b.variant}`, b, ['resumeMs'], true);
      t.ok(Number.isFinite(b.heldMB), `paused session ${b.variant}: heldMB is a number (${b.heldMB})`);
      t.equal(b.exact, true, `paused session ${b.variant}: every byte arrived after the link came back`);
    }
  });

  t.test('scale', async (t) => {
    const s = r.scale;
    if (!s) return void t.fail('no scale figures');
    numbers(t, 'scale', s, ['agents', 'bytesPerAgent', 'connectedRssMB', 'streamingRssPeakMB', 'maxRssMB', 'connectMs', 'streamWallMs', 'aggregateMBps']);
    numbers(t, 'scale', s, ['connectCpuMs', 'streamCpuMs', 'streamUserMs', 'streamSystemMs'], true);
    t.equal(s.exact, s.agents, `every agent's log arrived exact (${s.exact} of ${s.agents})`);
    t.equal(s.allExact, true, 'allExact');
    t.same(s.failures, [], 'no failures');
  });

  t.test('serial', async (t) => {
    const se = r.serial;
    if (!se) return void t.fail('no serial figures');
    if (!se.available) {
      t.fail(`serial not available (${se.reason}): run 'apt-get install socat'`, { diagnostic: false });
      return;
    }
    const bauds = [...new Set(se.rows.map((x) => x.baud))];
    t.ok(bauds.length > 0, `serial rows (${bauds.join(', ')} baud)`);
    for (const baud of bauds) {
      for (const mode of SERIAL_MODES) {
        const row = se.rows.find((x) => x.baud === baud && x.mode === mode);
        t.ok(row, `${baud} baud ${mode}: a row`);
        if (!row) continue;
        const where = `${baud} baud ${mode}`;
        t.equal(row.lineBytesPerSecond, baud / 10, `${where}: the line rate`);
        numbers(t, where, row, ['bytes', 'seconds', 'goodput', 'ofLine', 'withOverhead', 'deflateRatio', 'wirePerPayload', 'lineBusy', 'framesIn']);
        numbers(t, where, row, ['framesDropped'], true);
      }
    }
    t.same(se.latency.map((l) => l.baud), bauds, 'a latency figure for every baud rate');
    for (const l of se.latency) numbers(t, `${l.baud} baud latency`, l, ['lines', 'medianMs', 'maxMs', 'frameBytes', 'lineMs']);
  });

  t.test('goals', async (t) => {
    t.ok(Array.isArray(r.goals) && r.goals.length > 0, 'a list of goals');
    // The Buildbot comparison's, and the noise section's builds through Buildbot.
    const buildbotGoal = (name: string) => /^Buildbot |e2e build|a build of ordinary steps|^the same build /.test(name);
    for (const g of r.goals) {
      t.ok(typeof g.goal === 'string' && typeof g.target === 'string' && typeof g.measured === 'string', `${g.goal}: named, with a target`);
      if (buildbotGoal(g.goal)) {
        t.equal(g.met, null, `${g.goal}: not measured without Buildbot`);
        continue;
      }
      t.ok(typeof g.value === 'number' && Number.isFinite(g.value) && g.value > 0, `${g.goal}: measured (${g.measured})`);
      t.type(g.met, 'boolean', `${g.goal}: met or not`);
    }
    // The goals a quick run without Buildbot measures, whatever its sizes.
    const expected: Array<[string, RegExp]> = [
      ['throughput', /^agent → plugin throughput/],
      ['stat round trip', /^trivial command round trip \(stat\)/],
      ['hub RSS of the scale run', /^\d+ agents streaming at once: hub RSS/],
      ['exact logs of the scale run', /^\d+ agents: every log exact/],
      ['serial raw goodput at 115200 baud', /^serial raw goodput at 115200 baud/],
      ['serial compressed text goodput', /^serial compressed text goodput/],
      ['serial short-line latency', /^serial: a short line reaches the master/],
      ['serial random bytes with deflate on and off', /^serial random bytes with deflate on, of with it off/],
    ];
    for (const a of r.memory?.agents ?? []) {
      expected.push([`agent RSS idle, ${a.variant}`, new RegExp(`^agent RSS idle, ${escapeRegExp(a.variant)}$`)]);
      expected.push([`agent RSS streaming, ${a.variant}`, new RegExp(`^agent RSS streaming .*, ${escapeRegExp(a.variant)}$`)]);
    }
    for (const [label, re] of expected) {
      const g = r.goals.find((x) => re.test(x.goal));
      t.ok(g && g.value !== null && g.met !== null, `the goal of the ${label} is in the list, measured (${g ? g.measured : 'missing'})`);
    }
  });
});
