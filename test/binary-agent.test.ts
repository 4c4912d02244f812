/**
 * The single-file agent (npm run build:binary), run as a board runs it: built
 * here once (or reused when scripts/build-binary.js finds it up to date), then
 * the x64 binary natively — --version, --help, a shell step and a file upload
 * against a hub on loopback, nothing on stderr but its own log lines, under
 * the systemd unit's restrictions — and the arm64 and armv7l binaries under
 * qemu-user doing the same shell step and upload.
 */
import t, { type Test } from 'tap';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HELP } from '../agent/cli';
import { TetherHub } from '../master-plugin/hub';
import type { RemoteAgent } from '../master-plugin/remote';
import { VERSION } from '../wire/version';
import { type Target, TARGETS, ensureBinaries, runner } from '../scripts/build-binary';
import { patternBytes } from './helpers/buildbot-e2e';
import { REPO_ROOT, sleep, tempDir } from './helpers/support';

const SECRET = 'board secret ✓';
const LOG_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z tether-agent: /;
const target = (name: string): Target => TARGETS.find((x) => x.name === name)!;

let binaries: Record<string, string> = {};
t.before(async () => {
  binaries = await ensureBinaries({ log: (line) => t.comment(`build-binary: ${line}`) });
});

interface Board {
  hub: TetherHub;
  master: string;
}

async function startHub(t: Test): Promise<Board> {
  const hub = new TetherHub({ workers: { board: SECRET } });
  const address = await hub.listen('tcp://127.0.0.1:0');
  t.teardown(() => hub.close());
  return { hub, master: `tcp://127.0.0.1:${address.port}` };
}

interface AgentProcess {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnAgent(t: Test, argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): AgentProcess {
  const child = spawn(argv[0], argv.slice(1), { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => void (stdout += d));
  child.stderr!.on('data', (d) => void (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    if (stdout) t.comment(`agent stdout: ${stdout}`);
  });
  return {
    child,
    stderr: () => stderr,
    exited,
    stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Waits for the agent to connect; fails early if it exits first. */
async function connected(board: Board, agent: AgentProcess, timeoutMs: number): Promise<RemoteAgent> {
  return Promise.race([
    board.hub.waitForAgent('board', timeoutMs),
    agent.exited.then(({ code, signal }) => Promise.reject(new Error(`the agent exited (${signal ?? code}) before connecting:\n${agent.stderr()}`))),
  ]);
}

/** Buildbot's ShellCommand arguments for `echo hi`, then an upload_file of a file with every byte value. */
async function shellAndUpload(t: Test, remote: RemoteAgent, basedir: string): Promise<void> {
  let stdout = '';
  let stderr = '';
  const updates: Record<string, unknown> = {};
  const shell = await remote.run('shell', {
    command: ['sh', '-c', 'echo hi'], workdir: '.', env: {}, want_stdout: true, want_stderr: true,
    timeout: 30, maxTime: null, usePTY: false, logEnviron: false, logfiles: {},
  }, {
    stdout: (c) => void (stdout += c.toString()),
    stderr: (c) => void (stderr += c.toString()),
    update: (key, value) => void (updates[key] = value),
  }).result;
  t.equal(shell.failure, null, 'shell completed');
  t.equal(stdout, 'hi\n', 'shell: stdout');
  t.equal(stderr, '', 'shell: no stderr');
  t.equal(updates.rc, 0, 'shell: rc 0');

  const data = patternBytes(200_000 + 123, 'binary upload');
  fs.writeFileSync(path.join(basedir, 'payload.bin'), data);
  const chunks: Buffer[] = [];
  let closes = 0;
  const upUpdates: Record<string, unknown> = {};
  let header = '';
  const upload = await remote.run('upload_file', {
    workdir: '.', workersrc: 'payload.bin', writer: null, maxsize: null, blocksize: 16384, keepstamp: false,
  }, {
    fileData: (c) => void chunks.push(Buffer.from(c)),
    fileClose: () => void closes++,
    header: (text) => void (header += text),
    update: (key, value) => void (upUpdates[key] = value),
  }).result;
  t.equal(upload.failure, null, 'upload completed');
  t.equal(upUpdates.rc, 0, 'upload: rc 0');
  t.equal(closes, 1, 'upload: the writer closed once');
  t.equal(header, `sending ${basedir}/./payload.bin\n`, 'upload: header (buildbot-worker keeps the ./)');
  const got = Buffer.concat(chunks);
  t.equal(got.length, data.length, 'upload: length');
  t.ok(got.equals(data), 'upload: byte-exact');
}

function checkLog(t: Test, stderr: string): void {
  const lines = stderr.split('\n').filter(Boolean);
  t.ok(lines.length > 0, 'the agent logged');
  t.same(lines.filter((l) => !LOG_LINE.test(l)), [], 'stderr holds only the agent\'s own log lines (no SEA or other warning)');
  t.match(stderr, /connected to tcp:\/\/127\.0\.0\.1:\d+ as 'board'/);
}

/** A basedir and a secret file in a fresh temp dir. */
async function boardFiles(t: Test): Promise<{ dir: string; basedir: string; secretFile: string }> {
  const dir = await tempDir(t, 'tether-binary-');
  const basedir = path.join(dir, 'basedir');
  fs.mkdirSync(basedir);
  const secretFile = path.join(dir, 'secret');
  fs.writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 });
  return { dir, basedir, secretFile };
}

const vmStatus = (pid: number): Record<string, number> =>
  Object.fromEntries(fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')
    .map((l) => /^(VmRSS|RssAnon|RssFile):\s+(\d+) kB/.exec(l)).filter((m) => m).map((m) => [m![1], Number(m![2])]));

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

t.test('x64: --version and --help, nothing else printed', async (t) => {
  const exe = binaries['linux-x64'];
  const version = spawnSync(exe, ['--version'], { encoding: 'utf8', cwd: '/' });
  t.equal(version.status, 0);
  t.equal(version.stdout, `tether-agent ${VERSION}\n`);
  t.equal(version.stderr, '', 'no SEA warning');
  const help = spawnSync(exe, ['--help'], { encoding: 'utf8' });
  t.equal(help.status, 0);
  t.equal(help.stdout, HELP, 'the same help as the Node-run agent');
  t.equal(help.stderr, '');
  const bad = spawnSync(exe, ['--bogus'], { encoding: 'utf8' });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /Unknown option '--bogus'/);
});

t.test('x64: shell step and file upload against a hub, only log lines on stderr', async (t) => {
  const board = await startHub(t);
  const { basedir, secretFile } = await boardFiles(t);
  const started = performance.now();
  const agent = spawnAgent(t, [binaries['linux-x64'], '--master', board.master, '--name', 'board', '--secret-file', secretFile, '--basedir', basedir]);
  const remote = await connected(board, agent, 20_000);
  t.comment(`x64: spawn to connected ${Math.round(performance.now() - started)} ms`);
  t.equal(remote.info.arch, 'x64', 'worker info: arch');
  t.equal(remote.info.version, VERSION, 'worker info: version');
  await shellAndUpload(t, remote, basedir);
  await sleep(3000); // idle
  const mem = vmStatus(agent.child.pid!);
  t.comment(`x64 idle: VmRSS ${(mem.VmRSS / 1024).toFixed(1)} MB (RssAnon ${(mem.RssAnon / 1024).toFixed(1)} MB, RssFile ${(mem.RssFile / 1024).toFixed(1)} MB)`);
  const exit = await agent.stop();
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: a clean exit');
  checkLog(t, agent.stderr());
});

t.test('x64: start to connected, several runs', async (t) => {
  const board = await startHub(t);
  const { basedir, secretFile } = await boardFiles(t);
  const times: number[] = [];
  for (let i = 0; i < 7; i++) {
    const started = performance.now();
    const agent = spawnAgent(t, [binaries['linux-x64'], '--master', board.master, '--name', 'board', '--secret-file', secretFile, '--basedir', basedir]);
    await connected(board, agent, 20_000);
    times.push(performance.now() - started);
    await agent.stop();
    await sleep(100);
  }
  t.comment(`x64 spawn to connected: median ${Math.round(median(times))} ms of ${times.map(Math.round).join(', ')}`);
  t.ok(median(times) < 5000, 'starts in seconds at most');
});

t.test('x64 the way agent/tether-agent.service runs it', async (t) => {
  const unit = fs.readFileSync(path.join(REPO_ROOT, 'agent', 'tether-agent.service'), 'utf8');
  for (const line of [
    'ExecStart=/usr/local/bin/tether-agent --config /etc/tether-agent.json', 'DynamicUser=yes', 'StateDirectory=tether-agent',
    'ProtectSystem=strict', 'ProtectHome=yes', 'NoNewPrivileges=yes', 'PrivateTmp=yes', 'Restart=always',
  ]) t.match(unit, new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'), line);

  t.test('systemd-analyze verify accepts the unit', async (t) => {
    const dir = await tempDir(t, 'tether-unit-');
    const file = path.join(dir, 'tether-agent.service');
    fs.writeFileSync(file, unit.replace('ExecStart=/usr/local/bin/tether-agent', `ExecStart=${binaries['linux-x64']}`));
    const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    t.equal(r.status, 0, r.stderr);
    t.equal(r.stdout + r.stderr, '', 'no complaints');
  });

  // The unit's restrictions, as far as they can be had without systemd:
  // everything read-only but the basedir (ProtectSystem=strict + StateDirectory),
  // an unprivileged user without a home, no new privileges, started with --config.
  const root = process.getuid?.() === 0;
  t.test('read-only system, unprivileged user, --config', { skip: root ? false : 'needs root (unshare, setpriv)' }, async (t) => {
    const board = await startHub(t);
    const dir = await tempDir(t, 'tether-unit-run-');
    fs.chmodSync(dir, 0o755);
    const exe = path.join(dir, 'tether-agent');
    fs.copyFileSync(binaries['linux-x64'], exe);
    fs.chmodSync(exe, 0o755);
    const basedir = path.join(dir, 'state');
    fs.mkdirSync(basedir, { mode: 0o700 });
    fs.chownSync(basedir, 65534, 65534);
    const creds = path.join(dir, 'credentials');
    fs.mkdirSync(creds, { mode: 0o500 });
    fs.writeFileSync(path.join(creds, 'secret'), `${SECRET}\n`, { mode: 0o400 });
    fs.chownSync(creds, 65534, 65534);
    fs.chownSync(path.join(creds, 'secret'), 65534, 65534);
    const config = path.join(dir, 'tether-agent.json');
    // no secret in the config: the agent finds systemd's credential (LoadCredential=secret:...)
    fs.writeFileSync(config, JSON.stringify({ master: board.master, name: 'board', basedir }), { mode: 0o644 });
    // in a mount namespace of its own: the basedir stays writable, / (and /tmp if
    // it is a mount of its own) become read-only; then drop to nobody
    const script = [
      'mount --bind "$1" "$1"', 'mount -o remount,bind,ro /',
      '{ ! mountpoint -q /tmp || mount -o remount,bind,ro /tmp; }', 'cd "$1"',
      'exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs -- env -i PATH=/usr/bin:/bin HOME="$1" CREDENTIALS_DIRECTORY="$4" "$2" --config "$3"',
    ].join(' && ');
    const agent = spawnAgent(t, ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', basedir, exe, config, creds], { cwd: '/' });
    const remote = await connected(board, agent, 20_000);
    // the build can write its basedir, and nothing else
    let out = '';
    const probe = await remote.run('shell', {
      command: ['sh', '-c', 'id -u; touch made-here && echo basedir-ok; touch /tmp/x 2>/dev/null || echo tmp-ro; touch "$HOME/../x" 2>/dev/null || echo above-ro'],
      workdir: 'build', env: {}, want_stdout: true, want_stderr: true, timeout: 30, maxTime: null, usePTY: false, logEnviron: false, logfiles: {},
    }, { stdout: (c) => void (out += c.toString()) }).result;
    t.equal(probe.failure, null);
    t.equal(out, '65534\nbasedir-ok\ntmp-ro\nabove-ro\n');
    t.ok(fs.existsSync(path.join(basedir, 'build', 'made-here')));
    await shellAndUpload(t, remote, basedir);
    t.same(await agent.stop(), { code: 0, signal: null }, 'SIGTERM: a clean exit');
    checkLog(t, agent.stderr());
  });
});

for (const name of ['linux-arm64', 'linux-armv7l']) {
  t.test(`${name} under qemu-user: shell step and file upload`, async (t) => {
    const board = await startHub(t);
    const { basedir, secretFile } = await boardFiles(t);
    const started = performance.now();
    const agent = spawnAgent(t, [...runner(target(name), binaries[name]), '--master', board.master, '--name', 'board', '--secret-file', secretFile, '--basedir', basedir]);
    const remote = await connected(board, agent, 120_000);
    t.comment(`${name} (emulated by qemu): spawn to connected ${Math.round(performance.now() - started)} ms`);
    t.equal(remote.info.arch, target(name).arch, 'worker info: the emulated CPU');
    t.equal(remote.info.version, VERSION, 'worker info: version');
    await shellAndUpload(t, remote, basedir);
    t.same(await agent.stop(), { code: 0, signal: null }, 'SIGTERM: a clean exit');
    checkLog(t, agent.stderr());
  });
}

t.test('cbor-x in the bundle: no native accelerator, the JavaScript codec works, no warning', async (t) => {
  const esbuild = await import('esbuild');
  const dir = await tempDir(t, 'tether-cbor-');
  const entry = [
    "import { isNativeAccelerationEnabled } from 'cbor-x/index-no-eval';",
    "import { decodeItem, encodeItem } from './wire/cbor';",
    "const item = { text: 'hello ✓', list: [1, -2, 3.5, null, true], bytes: Buffer.from([0, 255]) };",
    'const back = decodeItem(encodeItem(item)) as typeof item;',
    'console.log(JSON.stringify({ native: isNativeAccelerationEnabled, text: back.text, list: back.list, bytes: Buffer.from(back.bytes).toString(\'hex\') }));',
  ].join('\n');
  const out = path.join(dir, 'probe.js'); // no node_modules above it
  const built = await esbuild.build({
    stdin: { contents: entry, resolveDir: REPO_ROOT, loader: 'ts', sourcefile: 'probe.ts' },
    bundle: true, platform: 'node', format: 'cjs', target: 'node20.11', outfile: out, logLevel: 'silent', metafile: true,
  });
  t.same(built.warnings, [], 'esbuild: no warning');
  t.same(Object.keys(built.metafile.inputs).filter((input) => input.includes('cbor-extract')), [], 'cbor-extract is not in the bundle');
  const r = spawnSync(process.execPath, [out], { encoding: 'utf8', cwd: dir });
  t.equal(r.stderr, '', 'nothing on stderr');
  const got = JSON.parse(r.stdout);
  t.equal(got.native, false, 'cbor-x runs without cbor-extract');
  t.same(got, { native: false, text: 'hello ✓', list: [1, -2, 3.5, null, true], bytes: '00ff' }, 'round trip');
});
