/**
 * Runs a REAL Buildbot master (Debian's buildbot 3.7) and the reference
 * buildbot-worker for tests, drives builds through the REST API and reads
 * their results back.
 *
 *   const master = await createMaster({ workers: [{ name: 'w1', password: 'pw' }],
 *     builders: [{ name: 'hello', steps: ["steps.ShellCommand(command=['echo', 'hello'])"] }] });
 *   t.teardown(() => master.stop());
 *   await master.start();
 *   const worker = await createWorker({ master, name: 'w1', password: 'pw' });
 *   t.teardown(() => worker.stop());
 *   await worker.start();
 *   const build = await master.runBuild('hello');
 *
 * Debian ships Buildbot without buildbot-www; test/buildbot/www-stub/ registers
 * a stand-in 'base' www app so the REST API runs (it is put on PYTHONPATH).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ForegroundProcess } from './processes';
import { REPO_ROOT, WaitAbort, freePort, makeTempDir, sleep, waitFor } from './support';

export const WWW_STUB_DIR = path.join(REPO_ROOT, 'test', 'buildbot', 'www-stub');
export const PLUGIN_DIR = path.join(REPO_ROOT, 'master-plugin', 'buildbot');
export const BUILDBOT_TEST_DIR = path.join(REPO_ROOT, 'test', 'buildbot');

/** Debian's python (a pyenv python3 may come first on PATH and lacks buildbot). */
export const PYTHON = process.env.TETHER_BUILDBOT_PYTHON ?? '/usr/bin/python3';
export const BUILDBOT = process.env.TETHER_BUILDBOT ?? '/usr/bin/buildbot';
export const BUILDBOT_WORKER = process.env.TETHER_BUILDBOT_WORKER ?? '/usr/bin/buildbot-worker';
export const MSGPACK_PROTOCOL = 'msgpack_experimental_v7';

/** Buildbot's result codes (buildbot.process.results). */
export const RESULTS = {
  SUCCESS: 0, WARNINGS: 1, FAILURE: 2, SKIPPED: 3, EXCEPTION: 4, RETRY: 5, CANCELLED: 6,
} as const;
const RESULT_NAMES = ['success', 'warnings', 'failure', 'skipped', 'exception', 'retry', 'cancelled'];

/** 'success', 'failure', ... for a result code (null: not finished). */
export function resultName(code: number | null | undefined): string {
  if (code === null || code === undefined) return 'unfinished';
  return RESULT_NAMES[code] ?? `result-${code}`;
}

/** Environment for buildbot/buildbot-worker processes: the www stand-in on PYTHONPATH. */
export function buildbotEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  env.PYTHONPATH = [WWW_STUB_DIR, extra.PYTHONPATH ?? process.env.PYTHONPATH]
    .filter((p) => p).join(path.delimiter);
  // no __pycache__ in the source tree (www stub, master plugin)
  env.PYTHONDONTWRITEBYTECODE = '1';
  delete env.PYTHONHOME;
  return env;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, cwd, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      } else {
        resolve({ stdout: String(stdout), stderr: String(stderr) });
      }
    });
  });
}

/** Throws a clear error if Buildbot is not installed where the harness looks. */
export function checkBuildbotInstalled(): void {
  for (const f of [PYTHON, BUILDBOT, BUILDBOT_WORKER]) {
    if (!fs.existsSync(f)) {
      throw new Error(`${f} not found: the Buildbot tests need Debian's buildbot and buildbot-worker ` +
        `(apt-get install buildbot buildbot-worker), or TETHER_BUILDBOT_PYTHON/TETHER_BUILDBOT/` +
        `TETHER_BUILDBOT_WORKER set`);
    }
  }
}

/** The last `lines` lines of a (possibly large) text file; '' if missing. */
export function tailFile(file: string, lines = 200, maxBytes = 256 * 1024): string {
  return readFrom(file, 0, maxBytes).split('\n').slice(-lines).join('\n');
}

/** A text file from byte `offset` on, at most its last `maxBytes`; '' if missing. */
function readFrom(file: string, offset: number, maxBytes = Infinity): string {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return '';
  }
  try {
    const size = fs.fstatSync(fd).size;
    const start = Math.max(offset, size - maxBytes);
    if (size <= start) return '';
    const buf = Buffer.alloc(size - start);
    fs.readSync(fd, buf, 0, buf.length, start);
    return buf.toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** A Python expression evaluating to the given JSON-able value. */
export function pyValue(value: unknown): string {
  return `json.loads(${JSON.stringify(JSON.stringify(value))})`;
}

/** A Python string literal. */
export function pyString(s: string): string {
  return JSON.stringify(s);
}

// ------------------------------------------------------------ process base

/** A master or worker: something with a log and a directory that can be stopped. */
export interface BuildbotProcess {
  readonly name: string;
  readonly dir: string;
  logTail(lines?: number): string;
  stop(): Promise<void>;
}

// ------------------------------------------------------------------ master

export interface WorkerSpec {
  name: string;
  password: string;
  /** Extra keyword arguments for worker.Worker(...), as Python source, e.g. "max_builds=1". */
  kwargs?: string;
}

export interface BuilderSpec {
  name: string;
  /** Default: every worker of the master. */
  workernames?: string[];
  /** Python expressions, each evaluating to a BuildStep (names from buildbot.plugins are in scope). */
  steps?: string[];
  /** Instead of steps: a Python expression evaluating to a BuildFactory. */
  factory?: string;
  /** ForceScheduler for this builder; default `force-<name>`; null for none. */
  forceScheduler?: string | null;
  /** Names of string properties the force scheduler accepts. */
  forceProperties?: string[];
}

export interface MasterOptions {
  workers: WorkerSpec[];
  builders: BuilderSpec[];
  /** Default: a free port. */
  msgpackPort?: number;
  /** Default: a free port. */
  wwwPort?: number;
  /** Directory for the master; default: a new temp dir. */
  dir?: string;
  /** Load tether_buildbot's msgpack fixes (read_file data, upload utime) into the master. */
  fixMsgpack?: boolean;
  /** JSON-able data, available in master.cfg as the Python dict TEST. */
  vars?: Record<string, unknown>;
  /** Python files exec'd into master.cfg's namespace before the builders are defined. */
  include?: string[];
  /** Python source appended to master.cfg (e.g. loading TetherService). */
  extraConfig?: string;
  /** Extra environment for the master process. */
  env?: NodeJS.ProcessEnv;
}

export interface BuildInfo {
  buildid: number;
  number: number;
  builderid: number;
  buildrequestid: number;
  workerid: number;
  complete: boolean;
  results: number | null;
  state_string: string;
  started_at: number;
  complete_at: number | null;
  properties?: Record<string, [unknown, string]>;
}

export interface StepInfo {
  stepid: number;
  buildid: number;
  number: number;
  name: string;
  complete: boolean;
  results: number | null;
  state_string: string;
  started_at: number | null;
  complete_at: number | null;
  hidden: boolean;
  urls: Array<{ name: string; url: string }>;
}

export interface LogInfo {
  logid: number;
  stepid: number;
  name: string;
  slug: string;
  type: string;
  num_lines: number;
  complete: boolean;
}

/** A stdio-type log ('s') split by stream; each string is newline-terminated lines. */
export interface StdioText {
  stdout: string;
  stderr: string;
  header: string;
}

export interface LogResult {
  name: string;
  slug: string;
  /** 's' (stdio: o/e/h lines), 't' (text), 'h' (html). */
  type: string;
  num_lines: number;
  /** For type 's'. */
  stdio?: StdioText;
  /** For other types: the raw text. */
  text?: string;
}

export interface StepResult {
  stepid: number;
  number: number;
  name: string;
  results: number | null;
  result: string;
  state_string: string;
  hidden: boolean;
  urls: Array<{ name: string; url: string }>;
  logs: LogResult[];
  /** Log by name. */
  log(name?: string): LogResult | undefined;
}

export interface BuildResult {
  buildid: number;
  number: number;
  builderid: number;
  results: number | null;
  result: string;
  state_string: string;
  /** name -> { value, source } */
  properties: Record<string, { value: unknown; source: string }>;
  steps: StepResult[];
  /** Step by name (the first with that name). */
  step(name: string): StepResult | undefined;
}

/** Splits a stdio log's stored lines ('o'/'e'/'h' + text) by stream. */
export function splitStdio(content: string): StdioText {
  const out = { stdout: '', stderr: '', header: '' };
  const lines = content.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  for (const line of lines) {
    const rest = line.slice(1) + '\n';
    switch (line[0]) {
      case 'o': out.stdout += rest; break;
      case 'e': out.stderr += rest; break;
      case 'h': out.header += rest; break;
      default: out.header += line + '\n'; // should not happen
    }
  }
  return out;
}

export class BuildbotMaster implements BuildbotProcess {
  readonly name = 'buildbot master';
  readonly apiUrl: string;

  constructor(readonly dir: string, readonly msgpackPort: number, readonly wwwPort: number,
    private readonly env: NodeJS.ProcessEnv, private options: MasterOptions) {
    this.apiUrl = `http://127.0.0.1:${wwwPort}/api/v2`;
  }

  private readonly fg = new ForegroundProcess();

  get pid(): number | undefined { return this.fg.pid; }
  get running(): boolean { return this.fg.running; }
  get twistdLogPath(): string { return path.join(this.dir, 'twistd.log'); }
  get configPath(): string { return path.join(this.dir, 'master.cfg'); }
  /** The options master.cfg was last generated from. */
  get config(): MasterOptions { return this.options; }

  /** The last lines of twistd.log plus the process's own output. */
  logTail(lines = 200): string {
    const own = this.fg.output.trim();
    return tailFile(this.twistdLogPath, lines) + (own ? `\n--- master stdout/stderr ---\n${own}` : '');
  }

  /** twistd.log from byte offset on (see logSize). */
  logFrom(offset: number): string { return readFrom(this.twistdLogPath, offset); }
  logSize(): number { return fileSize(this.twistdLogPath); }

  /** Regenerates master.cfg (e.g. before reconfig()). */
  async writeConfig(options: MasterOptions = this.options): Promise<void> {
    this.options = options;
    await fsp.writeFile(this.configPath, generateMasterCfg(options, this.msgpackPort, this.wwwPort));
  }

  /** Runs `buildbot checkconfig` on the master dir (master need not run). */
  async checkConfig(): Promise<{ ok: boolean; output: string }> {
    return new Promise((resolve) => {
      execFile(PYTHON, [BUILDBOT, 'checkconfig', this.dir], { env: this.env, cwd: this.dir },
        (err, stdout, stderr) => resolve({ ok: !err, output: `${stdout}${stderr}` }));
    });
  }

  /** Starts `buildbot start --nodaemon` and waits until the REST API answers. */
  async start({ timeoutMs = 60_000 }: { timeoutMs?: number } = {}): Promise<void> {
    const offset = this.logSize();
    this.fg.spawnChild(PYTHON, [BUILDBOT, 'start', '--nodaemon', this.dir], this.env, this.dir);
    try {
      await waitFor('the buildbot master to start', async () => {
        const early = this.fg.exitedEarly();
        if (early) throw new WaitAbort(`buildbot master ${early}`);
        const log = this.logFrom(offset);
        if (/BuildMaster startup failed|Configuration Errors:|configuration update aborted/.test(log)) {
          throw new WaitAbort('buildbot master failed to start');
        }
        if (!log.includes('BuildMaster is running')) return false;
        const res = await fetch(`${this.apiUrl}/builders`);
        return res.ok;
      }, { timeoutMs, intervalMs: 250 });
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      await this.stop().catch(() => undefined);
      throw new Error(`${msg}\n--- twistd.log (${this.dir}) ---\n${this.logTail(120)}`);
    }
  }

  /** SIGTERM (SIGKILL after timeoutMs) and wait for the process to end. */
  async stop({ timeoutMs = 20_000 }: { timeoutMs?: number } = {}): Promise<void> {
    await this.fg.stopProcess(timeoutMs);
  }

  /**
   * Re-reads master.cfg (SIGHUP, like `buildbot reconfig`) and waits for the
   * reconfig to finish; rejects with the log if it failed.
   */
  async reconfig({ timeoutMs = 30_000 }: { timeoutMs?: number } = {}): Promise<void> {
    const pid = this.pid;
    if (!pid || !this.running) throw new Error('master not running');
    const offset = this.logSize();
    process.kill(pid, 'SIGHUP');
    await waitFor('the reconfig to finish', () => {
      const log = this.logFrom(offset);
      if (/reconfig aborted|configuration update failed|configuration update aborted/.test(log)) {
        throw new WaitAbort(`reconfig failed:\n${log.split('\n').slice(-60).join('\n')}`);
      }
      return /configuration update complete/.test(log);
    }, { timeoutMs });
  }

  // --- REST API

  /** GET /api/v2<apiPath>, parsed JSON. */
  async get<T = unknown>(apiPath: string): Promise<T> {
    const res = await fetch(this.apiUrl + apiPath);
    const body = await res.text();
    if (!res.ok) throw new Error(`GET ${apiPath}: HTTP ${res.status} ${body.slice(0, 500)}`);
    return JSON.parse(body) as T;
  }

  /** GET /api/v2<apiPath> as text (for .../raw). */
  async getText(apiPath: string): Promise<string> {
    const res = await fetch(this.apiUrl + apiPath);
    const body = await res.text();
    if (!res.ok) throw new Error(`GET ${apiPath}: HTTP ${res.status} ${body.slice(0, 500)}`);
    return body;
  }

  /** JSON-RPC control call: POST /api/v2<apiPath> {method, params}; returns result. */
  async rpc(apiPath: string, method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const res = await fetch(this.apiUrl + apiPath, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', method, id: 1, params }),
    });
    const body = await res.text();
    let parsed: { result?: unknown; error?: { message?: string } };
    try {
      parsed = JSON.parse(body) as typeof parsed;
    } catch {
      throw new Error(`POST ${apiPath} ${method}: HTTP ${res.status} ${body.slice(0, 500)}`);
    }
    if (!res.ok || parsed.error) {
      throw new Error(`POST ${apiPath} ${method}: HTTP ${res.status} ${parsed.error?.message ?? body.slice(0, 500)}`);
    }
    return parsed.result;
  }

  async builderId(name: string): Promise<number> {
    const r = await this.get<{ builders: Array<{ builderid: number; name: string }> }>(`/builders`);
    const b = r.builders.find((x) => x.name === name);
    if (!b) throw new Error(`no builder '${name}' (have ${r.builders.map((x) => x.name).join(', ')})`);
    return b.builderid;
  }

  /** The worker's REST record, or undefined. */
  async worker(name: string): Promise<{ workerid: number; name: string; connected_to: unknown[]; workerinfo: Record<string, unknown> } | undefined> {
    const r = await this.get<{ workers: Array<{ workerid: number; name: string; connected_to: unknown[]; workerinfo: Record<string, unknown> }> }>(`/workers`);
    return r.workers.find((w) => w.name === name);
  }

  /** Waits until the worker is connected (or, with connected=false, disconnected). */
  async waitForWorker(name: string, { connected = true, timeoutMs = 60_000 }: { connected?: boolean; timeoutMs?: number } = {}): Promise<void> {
    await waitFor(`worker ${name} to ${connected ? 'connect' : 'disconnect'}`, async () => {
      const w = await this.worker(name);
      const isConnected = !!w && w.connected_to.length > 0;
      return isConnected === connected;
    }, { timeoutMs, intervalMs: 250 });
  }

  /** Forces a build through the builder's ForceScheduler; returns the build request id. */
  async forceBuild(builder: string, { scheduler, reason = 'tether test', properties = {} }: {
    scheduler?: string; reason?: string; properties?: Record<string, string>;
  } = {}): Promise<number> {
    const builderid = await this.builderId(builder);
    const sched = scheduler ?? `force-${builder}`;
    const result = await this.rpc(`/forceschedulers/${encodeURIComponent(sched)}`, 'force',
      { builderid, reason, ...properties });
    // [bsid, {builderid: brid}]
    const brids = Array.isArray(result) ? result[1] as Record<string, number> : undefined;
    const brid = brids?.[String(builderid)];
    if (typeof brid !== 'number') throw new Error(`unexpected force result ${JSON.stringify(result)}`);
    return brid;
  }

  /** Waits for the build request to have a build; returns its buildid. */
  async waitForBuildOfRequest(buildrequestid: number, { timeoutMs = 60_000 } = {}): Promise<number> {
    return waitFor(`a build for build request ${buildrequestid}`, async () => {
      const r = await this.get<{ builds: BuildInfo[] }>(`/builds?buildrequestid=${buildrequestid}`);
      return r.builds.length ? r.builds[r.builds.length - 1]!.buildid : undefined;
    }, { timeoutMs, intervalMs: 200 });
  }

  async build(buildid: number): Promise<BuildInfo> {
    const r = await this.get<{ builds: BuildInfo[] }>(`/builds/${buildid}?property=*`);
    const b = r.builds[0];
    if (!b) throw new Error(`no build ${buildid}`);
    return b;
  }

  /** Waits until the build is complete. */
  async waitForBuild(buildid: number, { timeoutMs = 300_000 } = {}): Promise<BuildInfo> {
    return waitFor(`build ${buildid} to finish`, async () => {
      const b = await this.build(buildid);
      return b.complete ? b : undefined;
    }, { timeoutMs, intervalMs: 250 });
  }

  async steps(buildid: number): Promise<StepInfo[]> {
    const r = await this.get<{ steps: StepInfo[] }>(`/builds/${buildid}/steps`);
    return r.steps;
  }

  async logs(stepid: number): Promise<LogInfo[]> {
    const r = await this.get<{ logs: LogInfo[] }>(`/steps/${stepid}/logs`);
    return r.logs;
  }

  /** A log's full content: split by stream for stdio logs, raw text for the others. */
  async logContent(log: LogInfo): Promise<LogResult> {
    const base = { name: log.name, slug: log.slug, type: log.type, num_lines: log.num_lines };
    if (log.type === 's') {
      if (log.num_lines === 0) return { ...base, stdio: { stdout: '', stderr: '', header: '' } };
      const r = await this.get<{ logchunks: Array<{ content: string }> }>(`/logs/${log.logid}/contents`);
      return { ...base, stdio: splitStdio(r.logchunks.map((c) => c.content).join('')) };
    }
    return { ...base, text: log.num_lines === 0 ? '' : await this.getText(`/logs/${log.logid}/raw`) };
  }

  /** Waits for a step (by name) of a build to exist and satisfy `until`. */
  async waitForStep(buildid: number, name: string, { until = 'started', timeoutMs = 60_000 }: {
    until?: 'started' | 'complete'; timeoutMs?: number;
  } = {}): Promise<StepInfo> {
    return waitFor(`step ${name} of build ${buildid} to be ${until}`, async () => {
      const s = (await this.steps(buildid)).find((x) => x.name === name);
      if (!s) return undefined;
      return until === 'complete' ? (s.complete ? s : undefined) : s;
    }, { timeoutMs });
  }

  /** Waits until a stdio log of a step contains `text` in the given stream. */
  async waitForLogText(stepid: number, text: string, { log = 'stdio', stream = 'stdout', timeoutMs = 60_000 }: {
    log?: string; stream?: keyof StdioText; timeoutMs?: number;
  } = {}): Promise<void> {
    await waitFor(`'${text}' in ${log} of step ${stepid}`, async () => {
      const l = (await this.logs(stepid)).find((x) => x.name === log);
      if (!l) return false;
      const c = await this.logContent(l);
      return (c.stdio?.[stream] ?? c.text ?? '').includes(text);
    }, { timeoutMs });
  }

  /** Stops (interrupts) a running build. */
  async stopBuild(buildid: number, reason = 'stopped by tether test'): Promise<void> {
    await this.rpc(`/builds/${buildid}`, 'stop', { reason });
  }

  /** Everything about a build: steps with their logs' full text, and properties. */
  async getBuildResult(buildid: number): Promise<BuildResult> {
    const b = await this.build(buildid);
    const steps: StepResult[] = [];
    for (const s of await this.steps(buildid)) {
      const logs: LogResult[] = [];
      for (const l of await this.logs(s.stepid)) logs.push(await this.logContent(l));
      steps.push({
        stepid: s.stepid, number: s.number, name: s.name, results: s.results,
        result: resultName(s.results), state_string: s.state_string, hidden: s.hidden,
        urls: s.urls, logs,
        log(this: StepResult, name = 'stdio') { return this.logs.find((x) => x.name === name); },
      });
    }
    const properties: BuildResult['properties'] = {};
    for (const [k, [value, source]] of Object.entries(b.properties ?? {})) {
      properties[k] = { value, source };
    }
    return {
      buildid: b.buildid, number: b.number, builderid: b.builderid, results: b.results,
      result: resultName(b.results), state_string: b.state_string, properties, steps,
      step(this: BuildResult, name: string) { return this.steps.find((x) => x.name === name); },
    };
  }

  /** Forces a build, waits for it to finish and returns its results. */
  async runBuild(builder: string, opts: { scheduler?: string; reason?: string; properties?: Record<string, string>; timeoutMs?: number } = {}): Promise<BuildResult> {
    const brid = await this.forceBuild(builder, opts);
    const buildid = await this.waitForBuildOfRequest(brid, { timeoutMs: opts.timeoutMs ?? 60_000 });
    await this.waitForBuild(buildid, { timeoutMs: opts.timeoutMs ?? 300_000 });
    return this.getBuildResult(buildid);
  }
}

/** master.cfg text for the options. */
export function generateMasterCfg(o: MasterOptions, msgpackPort: number, wwwPort: number): string {
  const L: string[] = [];
  L.push('# -*- python -*-');
  L.push('# Generated by test/helpers/buildbot.ts for a Tether test.');
  L.push('import json');
  L.push('import os');
  L.push('import sys');
  L.push('');
  L.push('from buildbot.plugins import schedulers, steps, util, worker');
  L.push('from buildbot.process.results import SUCCESS, WARNINGS, FAILURE, SKIPPED, EXCEPTION');
  L.push('');
  L.push(`TEST = ${pyValue(o.vars ?? {})}`);
  L.push('');
  L.push('c = BuildmasterConfig = {}');
  L.push("c['title'] = 'tether-test'");
  L.push("c['buildbotNetUsageData'] = None");
  L.push("c['db'] = {'db_url': 'sqlite:///state.sqlite'}");
  L.push(`c['protocols'] = {'${MSGPACK_PROTOCOL}': {'port': ${msgpackPort}}}`);
  L.push(`c['www'] = {'port': 'tcp:${wwwPort}:interface=127.0.0.1', 'plugins': {}}`);
  L.push(`c['buildbotURL'] = 'http://127.0.0.1:${wwwPort}/'`);
  L.push("c['workers'] = []");
  for (const w of o.workers) {
    L.push(`c['workers'].append(worker.Worker(${pyString(w.name)}, ${pyString(w.password)}${w.kwargs ? ', ' + w.kwargs : ''}))`);
  }
  L.push("c['services'] = []");
  L.push("c['builders'] = []");
  L.push("c['schedulers'] = []");
  L.push('');
  if (o.fixMsgpack) {
    L.push('# make FileDownload/StringDownload (and keepstamp uploads) work over msgpack');
    L.push(`sys.path.insert(0, ${pyString(PLUGIN_DIR)})`);
    L.push('from tether_buildbot import fix_msgpack; fix_msgpack()');
    L.push('');
  }
  for (const inc of o.include ?? []) {
    L.push(`exec(compile(open(${pyString(inc)}, encoding='utf-8').read(), ${pyString(inc)}, 'exec'))`);
  }
  L.push('');
  L.push('def _tether_builder(name, workernames, factory, scheduler, props):');
  L.push("    c['builders'].append(util.BuilderConfig(name=name, workernames=workernames, factory=factory))");
  L.push('    if scheduler:');
  L.push("        c['schedulers'].append(schedulers.ForceScheduler(");
  L.push('            name=scheduler, builderNames=[name],');
  L.push("            properties=[util.StringParameter(name=p, default='') for p in props]))");
  L.push('');
  const allWorkers = o.workers.map((w) => w.name);
  for (const b of o.builders) {
    let factory: string;
    if (b.factory) {
      factory = b.factory;
    } else {
      L.push('_f = util.BuildFactory()');
      for (const s of b.steps ?? []) L.push(`_f.addStep(${s})`);
      factory = '_f';
    }
    const sched = b.forceScheduler === undefined ? `force-${b.name}` : b.forceScheduler;
    L.push(`_tether_builder(${pyString(b.name)}, ${pyValue(b.workernames ?? allWorkers)}, ${factory}, ` +
      `${sched === null ? 'None' : pyString(sched)}, ${pyValue(b.forceProperties ?? [])})`);
  }
  L.push('');
  if (o.extraConfig) {
    L.push('# extra configuration from the test');
    L.push(o.extraConfig);
  }
  return L.join('\n') + '\n';
}

/**
 * master.cfg lines that load TetherService from this checkout, the way an
 * admin does; `kwargs` is Python source, e.g. "listen=['tcp://127.0.0.1:9991']".
 */
export function tetherServiceConfig(kwargs: string): string {
  return [
    `sys.path.insert(0, ${pyString(PLUGIN_DIR)})`,
    'from tether_buildbot import TetherService',
    `c['services'].append(TetherService(${kwargs}))`,
  ].join('\n');
}

/** Creates a master directory (buildbot create-master) with a generated master.cfg. Not started. */
export async function createMaster(options: MasterOptions): Promise<BuildbotMaster> {
  checkBuildbotInstalled();
  const dir = options.dir ?? await makeTempDir('tether-bb-master-');
  const msgpackPort = options.msgpackPort ?? await freePort();
  let wwwPort = options.wwwPort ?? await freePort();
  while (wwwPort === msgpackPort) wwwPort = await freePort();
  const env = buildbotEnv(options.env);
  await run(PYTHON, [BUILDBOT, 'create-master', '--quiet', '--relocatable', '--log-size=1000000000',
    '--db=sqlite:///state.sqlite', dir], env);
  const master = new BuildbotMaster(dir, msgpackPort, wwwPort, env, options);
  await master.writeConfig(options);
  return master;
}

// ------------------------------------------------------------------ worker

export interface WorkerOptions {
  /** The master (its msgpack port) or a port number. */
  master: BuildbotMaster | number;
  name: string;
  password: string;
  /** Worker basedir; default: a new temp dir. */
  dir?: string;
  /** Seconds between keepalives (create-worker --keepalive). */
  keepalive?: number;
  env?: NodeJS.ProcessEnv;
}

export class BuildbotWorker implements BuildbotProcess {
  readonly name: string;
  private readonly fg = new ForegroundProcess();

  constructor(readonly dir: string, readonly workerName: string, private readonly env: NodeJS.ProcessEnv) {
    this.name = `buildbot-worker ${workerName}`;
  }

  get pid(): number | undefined { return this.fg.pid; }
  get running(): boolean { return this.fg.running; }
  get twistdLogPath(): string { return path.join(this.dir, 'twistd.log'); }

  logTail(lines = 200): string {
    const own = this.fg.output.trim();
    return tailFile(this.twistdLogPath, lines) + (own ? `\n--- worker stdout/stderr ---\n${own}` : '');
  }

  /** Starts `buildbot-worker start --nodaemon`; resolves once it is running (not necessarily connected). */
  async start(): Promise<void> {
    this.fg.spawnChild(PYTHON, [BUILDBOT_WORKER, 'start', '--nodaemon', this.dir], this.env, this.dir);
    await sleep(300);
    const early = this.fg.exitedEarly();
    if (early) throw new Error(`buildbot-worker ${early}\n${this.logTail(60)}`);
  }

  async stop({ timeoutMs = 20_000 }: { timeoutMs?: number } = {}): Promise<void> {
    await this.fg.stopProcess(timeoutMs);
  }
}

/** Creates a reference buildbot-worker directory speaking msgpack_experimental_v7. Not started. */
export async function createWorker(o: WorkerOptions): Promise<BuildbotWorker> {
  checkBuildbotInstalled();
  const dir = o.dir ?? await makeTempDir('tether-bb-worker-');
  const port = typeof o.master === 'number' ? o.master : o.master.msgpackPort;
  const env = buildbotEnv(o.env);
  const args = [BUILDBOT_WORKER, 'create-worker', '--quiet', '--relocatable', '--force',
    `--protocol=${MSGPACK_PROTOCOL}`, '--maxdelay=3', '--log-size=1000000000'];
  if (o.keepalive !== undefined) args.push(`--keepalive=${o.keepalive}`);
  args.push(dir, `127.0.0.1:${port}`, o.name, o.password);
  await run(PYTHON, args, env);
  return new BuildbotWorker(dir, o.name, env);
}

type TapLike = { teardown(fn: () => unknown): void; passing(): boolean; comment(...m: unknown[]): void };

/**
 * On test failure, prints the tails of the given masters'/workers' logs as
 * comments (register right after creating them).
 */
export function dumpLogsOnFailure(t: TapLike, ...things: Array<Pick<BuildbotProcess, 'name' | 'logTail'>>): void {
  t.teardown(() => {
    if (t.passing()) return;
    for (const x of things) t.comment(`--- ${x.name} log tail ---\n${x.logTail(150)}`);
  });
}

/**
 * One teardown for a test's Buildbot processes: stops them (last given
 * first), prints their log tails if the test failed, and removes their
 * directories (and any extra paths given as strings) if it passed, unless
 * TETHER_KEEP_TMP is set.
 */
export function teardownBuildbot(t: TapLike, ...things: Array<BuildbotProcess | string>): void {
  t.teardown(async () => {
    const procs = things.filter((x): x is BuildbotProcess => typeof x !== 'string');
    for (const p of [...procs].reverse()) await p.stop().catch(() => undefined);
    if (!t.passing()) {
      for (const p of procs) t.comment(`--- ${p.name} (${p.dir}) log tail ---\n${p.logTail(150)}`);
      return;
    }
    if (process.env.TETHER_KEEP_TMP) return;
    const dirs = things.map((x) => typeof x === 'string' ? x : x.dir);
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true }).catch(() => undefined);
  });
}

// ------------------------------------------------------- comparison records

export interface NormaliseOptions {
  /**
   * Literal strings (or regexps) to replace, applied first and longest string
   * first: e.g. [[worker.dir, '<WORKER>'], [tmpRoot, '<ROOT>']].
   */
  replace?: Array<[string | RegExp, string]>;
  /**
   * Which stdio header lines to keep: 'none', 'significant' (default: exit
   * codes, timeouts, kills, interruptions, failures; not the environment dump
   * or argv), or 'all'.
   */
  header?: 'none' | 'significant' | 'all';
  /** Line lists longer than this are summarised (count, first/last lines, sha256). Default 2000. */
  maxLines?: number;
  /** Step names to leave out. Default: ['worker_preparation']. */
  skipSteps?: string[];
  /**
   * Properties to keep: a list of names, or a filter. Default: every property
   * except those set by the worker or volatile ones (buildnumber, builddir, workername).
   */
  properties?: string[] | ((name: string, source: string) => boolean);
}

export type ComparisonLog = { stdout: string[]; stderr: string[]; header: string[] } | { text: string[] };

export interface ComparisonStep {
  name: string;
  result: string;
  state_string: string;
  logs: Record<string, ComparisonLog>;
}

export interface ComparisonRecord {
  result: string;
  state_string: string;
  steps: ComparisonStep[];
  properties: Record<string, unknown>;
}

/** Header lines that carry meaning (as opposed to the command/env dump the worker writes). */
export const SIGNIFICANT_HEADER = [
  /^program finished with exit code/,
  /^command timed out/,
  /^process killed by signal/,
  /^killing /,
  /^remoteFailed/,
  /^command interrupted/,
  /^elapsedTime=/,
];

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Replaces volatile parts of a text: given replacements, temp paths, elapsed times, pids, host name, dates. */
export function normaliseText(text: string, replace: Array<[string | RegExp, string]> = []): string {
  const literal = replace.filter((r): r is [string, string] => typeof r[0] === 'string' && r[0] !== '')
    .sort((a, b) => b[0].length - a[0].length);
  for (const [from, to] of literal) text = text.split(from).join(to);
  for (const [from, to] of replace) if (from instanceof RegExp) text = text.replace(from, to);
  const tmp = escapeRegExp(os.tmpdir().replace(/\/+$/, ''));
  text = text.replace(new RegExp(`${tmp}/[A-Za-z0-9._-]+`, 'g'), '<TMP>');
  text = text.replace(/elapsedTime=[0-9.e+-]+/g, 'elapsedTime=<T>');
  // buildbot-worker shows the command as a Python repr here (b'...' / [b'...'])
  text = text.replace(/^(command timed out: .*?) running .*, attempting to kill$/gm,
    '$1 running <COMMAND>, attempting to kill');
  text = text.replace(/\bpid([ =:]+)\d+/g, 'pid$1<PID>');
  text = text.replace(/\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:?\d{2}|Z)?/g, '<DATE>');
  const host = os.hostname();
  if (host.length >= 3) text = text.split(host).join('<HOST>');
  return text;
}

function lineList(text: string, o: Required<Pick<NormaliseOptions, 'maxLines'>> & { replace: Array<[string | RegExp, string]> }): string[] {
  if (text === '') return [];
  const lines = normaliseText(text, o.replace).split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  if (lines.length <= o.maxLines) return lines;
  const hash = createHash('sha256').update(lines.join('\n')).digest('hex');
  return [...lines.slice(0, 3), `<... ${lines.length} lines, sha256 ${hash} ...>`, ...lines.slice(-3)];
}

/** A normalised record of a build, for comparing runs through different workers. */
export function normaliseBuild(build: BuildResult, opts: NormaliseOptions = {}): ComparisonRecord {
  const replace = opts.replace ?? [];
  const lo = { maxLines: opts.maxLines ?? 2000, replace };
  const skip = new Set(opts.skipSteps ?? ['worker_preparation']);
  const headerMode = opts.header ?? 'significant';
  const steps: ComparisonStep[] = [];
  for (const s of build.steps) {
    if (skip.has(s.name)) continue;
    const logs: Record<string, ComparisonLog> = {};
    for (const l of s.logs) {
      if (l.stdio) {
        let header = lineList(l.stdio.header, { ...lo, maxLines: Infinity });
        if (headerMode === 'none') header = [];
        if (headerMode === 'significant') header = header.filter((h) => SIGNIFICANT_HEADER.some((re) => re.test(h)));
        logs[l.name] = { stdout: lineList(l.stdio.stdout, lo), stderr: lineList(l.stdio.stderr, lo), header };
      } else {
        logs[l.name] = { text: lineList(l.text ?? '', lo) };
      }
    }
    steps.push({ name: s.name, result: s.result, state_string: normaliseText(s.state_string, replace), logs });
  }
  const volatile = new Set(['buildnumber', 'builddir', 'workername']);
  const keep = typeof opts.properties === 'function' ? opts.properties
    : Array.isArray(opts.properties) ? ((n: string) => (opts.properties as string[]).includes(n))
      : (n: string, src: string) => src !== 'Worker' && !volatile.has(n);
  const properties: Record<string, unknown> = {};
  for (const name of Object.keys(build.properties).sort()) {
    const p = build.properties[name]!;
    if (!keep(name, p.source)) continue;
    properties[name] = typeof p.value === 'string' ? normaliseText(p.value, replace) : p.value;
  }
  return { result: build.result, state_string: normaliseText(build.state_string, replace), steps, properties };
}
