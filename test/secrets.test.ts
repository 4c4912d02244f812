/**
 * The worker's secret stays secret on the agent's side: real agent processes
 * (bin/tether-agent.js, the built CLI and the single binary's bundle) against
 * a hub on loopback. Whether it came from TETHER_SECRET, --secret-file or
 * systemd's credentials directory, it is not in the worker info the hub
 * receives, nor in a command's environment or in the header that lists it.
 * And a malformed workers or config file, or a secret on the command line
 * where a name or an option was due, gives a usage error that does not
 * quote the secret.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TetherHub } from '../master-plugin/hub';
import type { RemoteAgent } from '../master-plugin/remote';
import { shellArgs } from '../master-plugin/run-shell';
import { bundle } from '../scripts/build-binary';
import { AGENT_BIN, MASTER_BIN } from './helpers/tether-procs';
import { REPO_ROOT, tempDir } from './helpers/support';

/** Random, so that no other text can contain it by chance. */
const SECRET = `s3cret-${randomBytes(12).toString('hex')}`;
/** A variable every agent gets: it must reach INFO and the command, so that their absence of the secret means something. */
const MARKER = { TETHER_TEST_MARKER: 'visible' };

interface Connected {
  remote: RemoteAgent;
  /** What the agent printed so far. */
  log(): string;
}

/** Starts `argv` (an agent with --master and --name added) against a hub knowing 'rig', and waits for it. */
async function connectAgent(t: Test, argv: string[], env: NodeJS.ProcessEnv): Promise<Connected> {
  const hub = new TetherHub({ workers: { rig: SECRET } });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const child = spawn(argv[0]!, [...argv.slice(1), '--master', `tcp://127.0.0.1:${address.port}`, '--name', 'rig'], {
    env: { ...process.env, TETHER_SECRET: '', ...env }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d: Buffer) => void (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    await hub.close();
  });
  const remote = await Promise.race([
    hub.waitForAgent('rig', 20_000),
    exited.then((code) => Promise.reject(new Error(`the agent exited (${code}): ${log}`))),
  ]);
  return { remote, log: () => log };
}

/** Runs `env` the way Buildbot's ShellCommand does (logEnviron on); returns its stdout and the header lines. */
async function runEnv(agent: RemoteAgent, env: Record<string, string> = {}): Promise<{ stdout: string; header: string }> {
  let stdout = '';
  let header = '';
  const result = await agent.run('shell', { ...shellArgs(['env'], { env }), logEnviron: true }, {
    stdout: (d) => void (stdout += d.toString()),
    header: (text) => void (header += text),
  }).result;
  if (result.failure) throw new Error(`env failed: ${result.failure.message}`);
  return { stdout, header };
}

/** Everything the hub got from the agent and the command saw holds no trace of the secret, and the marker got through. */
async function checkNoSecret(t: Test, { remote: agent, log }: Connected, commandEnv: Record<string, string> = {}): Promise<void> {
  const environ = agent.info.environ as Record<string, string>;
  t.equal(environ.TETHER_TEST_MARKER, 'visible', 'INFO carries the agent\'s environment');
  t.notMatch(JSON.stringify(agent.info), SECRET, 'the worker info holds no secret');
  t.notOk('TETHER_SECRET' in environ, 'TETHER_SECRET is not in INFO\'s environ');
  const { stdout, header } = await runEnv(agent, commandEnv);
  t.match(stdout, /^TETHER_TEST_MARKER=visible$/m, 'the command inherits the agent\'s environment');
  t.match(header, /^ environment:\n(.|\n)* {2}TETHER_TEST_MARKER=visible\n/m, 'the header lists the environment');
  t.notMatch(stdout, SECRET, 'the command\'s environment holds no secret');
  t.notMatch(header, SECRET, 'the environment header holds no secret');
  t.notMatch(stdout, /^TETHER_SECRET=/m, 'TETHER_SECRET is not in the command\'s environment');
  t.notMatch(log(), SECRET, 'the agent does not log the secret');
}

t.test('TETHER_SECRET leaves the agent\'s environment, whichever entry point starts it', async (t) => {
  const dir = await tempDir(t, 'tether-secrets-');
  const bundled = path.join(dir, 'tether-agent-bundle.js');
  fs.writeFileSync(bundled, await bundle());
  const entries: Array<[string, string[]]> = [
    ['bin/tether-agent.js', [process.execPath, AGENT_BIN]],
    ['the built CLI', [process.execPath, path.join(REPO_ROOT, 'build', 'agent', 'cli.js')]],
    ['the single binary\'s bundle', [process.execPath, bundled]],
  ];
  for (const [what, argv] of entries) {
    await t.test(what, async (t) => {
      const agent = await connectAgent(t, [...argv, '--basedir', path.join(dir, 'basedir')], { TETHER_SECRET: SECRET, ...MARKER });
      // ${VAR} in a step's env is expanded from the agent's environment (buildbot-worker's way)
      await checkNoSecret(t, agent, { FROM_MASTER: '${TETHER_SECRET}' });
    });
  }
});

t.test('a variable holding the secret under another name is dropped too', async (t) => {
  const dir = await tempDir(t, 'tether-secrets-');
  const secretFile = path.join(dir, 'secret');
  fs.writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 });
  const agent = await connectAgent(t, [process.execPath, AGENT_BIN, '--secret-file', secretFile, '--basedir', path.join(dir, 'basedir')],
    { BOARD_TOKEN: `token=${SECRET};`, ...MARKER });
  t.notOk('BOARD_TOKEN' in (agent.remote.info.environ as object), 'not in INFO');
  t.match(agent.log(), /not reported to the master nor passed to commands, as they hold the worker's secret: BOARD_TOKEN\n/, 'logged by name');
  // whoever puts it there: the agent's environment or the step's
  await checkNoSecret(t, agent, { FROM_MASTER: `x${SECRET}x`, FROM_AGENT: '${BOARD_TOKEN}' });
});

t.test('under systemd the secret is read from $CREDENTIALS_DIRECTORY/secret', async (t) => {
  const dir = await tempDir(t, 'tether-secrets-');
  const credentials = path.join(dir, 'credentials');
  fs.mkdirSync(credentials, { mode: 0o700 });
  fs.writeFileSync(path.join(credentials, 'secret'), `${SECRET}\n`, { mode: 0o400 });
  // TETHER_SECRET is the last resort: the credential wins over a stale one
  const agent = await connectAgent(t, [process.execPath, AGENT_BIN, '--basedir', path.join(dir, 'basedir')],
    { CREDENTIALS_DIRECTORY: credentials, TETHER_SECRET: 'stale', ...MARKER });
  await checkNoSecret(t, agent);
});

/** Malformed JSON holding the secret, each a mistake people make. */
function malformed(secret: string): Record<string, string> {
  return {
    'a trailing comma': `{"workers": [{"name": "rig", "secret": "${secret}"},]}`,
    'a missing comma': `{"workers": [{"name": "rig" "secret": "${secret}"}]}`,
    'an unquoted value': `{"workers": [{"name": "rig", "secret": ${secret}}]}`,
    'an unterminated string': `{"workers": [{"name": "rig", "secret": "${secret}}]}`,
    'a stray character after': `{"workers": [{"name": "rig", "secret": "${secret}"}]}x`,
    'a cut-off file': `{"workers": [{"name": "rig", "secret": "${secret}"`,
  };
}

const run = (bin: string, args: string[], input?: string) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', input, timeout: 20_000, env: { ...process.env, TETHER_SECRET: '' } });

/** A usage error: exit 2, one line saying `says`, and no piece of the secret. */
function checkUsageError(t: Test, r: ReturnType<typeof run>, what: string, says: string | RegExp): void {
  t.equal(r.status, 2, `${what}: exit 2`);
  t.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line (${r.stderr.trim()})`);
  t.match(r.stderr, says, `${what}: says what is wrong`);
  const pieces = Array.from({ length: SECRET.length - 5 }, (_, i) => SECRET.slice(i, i + 6));
  t.same(pieces.filter((piece) => r.stderr.includes(piece)), [], `${what}: no piece of the secret is quoted`);
}

/** A malformed JSON file: the usage error names the file (and where it went wrong, when known). */
const notJson = (file: string) => `${file} is not valid JSON`;

t.test('a malformed workers file: a usage error that does not quote the secret', async (t) => {
  const dir = await tempDir(t, 'tether-secrets-');
  for (const [mistake, text] of Object.entries(malformed(SECRET))) {
    const file = path.join(dir, 'workers.json');
    fs.writeFileSync(file, text, { mode: 0o600 });
    checkUsageError(t, run(MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--workers-file', file]), `${mistake} (file)`, notJson(file));
    checkUsageError(t, run(MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--workers-file', '-'], text), `${mistake} (stdin)`,
      notJson('the workers file -'));
    checkUsageError(t, run(MASTER_BIN, ['exec', '--listen', 'tcp://127.0.0.1:0', '--workers-file', file, '--', 'true']),
      `${mistake} (exec)`, notJson(file));
  }
  // the position is told when the parser knows it: line and column, not the text around it
  const file = path.join(dir, 'lines.json');
  fs.writeFileSync(file, `{\n  "workers": [\n    {"name": "rig", "secret": "${SECRET}}\n  ]\n}\n`);
  t.match(run(MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--workers-file', file]).stderr, 'at line 3, column 31 ', 'where the string starts');
});

t.test('a malformed agent config file: a usage error that does not quote the secret', async (t) => {
  const dir = await tempDir(t, 'tether-secrets-');
  for (const [mistake, text] of Object.entries(malformed(SECRET))) {
    const file = path.join(dir, 'agent.json');
    fs.writeFileSync(file, text.replace('"workers"', '"master": "tcp://127.0.0.1:1", "x"'), { mode: 0o600 });
    checkUsageError(t, run(AGENT_BIN, ['--config', file]), mistake, notJson(`the config file ${file}`));
  }
});

t.test('a secret where a name or an option was due: a usage error that does not quote it', async (t) => {
  const listen = ['--listen', 'tcp://127.0.0.1:0'];
  const agent = ['--master', 'tcp://127.0.0.1:1', '--name', 'rig', '--basedir', '/nonexistent/basedir'];
  const stray = /argument \d+ is neither an option nor an option's value \(it is not shown: it may be a secret\)/;
  const worker = "--worker takes NAME:SECRET; a --worker value lacks the 'NAME:' part (it is not shown: it may be a secret)";
  const cases: Array<[string, string, string[], string | RegExp]> = [
    ['--worker SECRET (the name forgotten)', MASTER_BIN, [...listen, '--worker', SECRET], worker],
    ['--worker NAME=SECRET', MASTER_BIN, [...listen, '--worker', `rig=${SECRET}`], worker],
    ['--worker :SECRET', MASTER_BIN, [...listen, '--worker', `:${SECRET}`], worker],
    ['--worker NAME SECRET', MASTER_BIN, [...listen, '--worker', 'rig', SECRET], stray],
    ['exec --worker SECRET', MASTER_BIN, ['exec', ...listen, '--worker', SECRET, '--', 'true'], worker],
    ['exec --env SECRET (the name forgotten)', MASTER_BIN, ['exec', ...listen, '--worker', 'rig:s', '--env', SECRET, '--', 'true'], /--env takes K=V; a --env value lacks the 'K=' part/],
    ['the agent\'s secret without --secret', AGENT_BIN, [...agent, SECRET], stray],
    ['--secret with a space, unquoted', AGENT_BIN, [...agent, '--secret', 'first', SECRET], stray],
  ];
  for (const [what, bin, args, says] of cases) checkUsageError(t, run(bin, args), what, says);
});
