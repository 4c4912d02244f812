/**
 * tether-agent --config FILE: the options a board's service starts with, as a
 * JSON object keyed by the long options. Command-line flags override it.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HELP, OPTIONS, mergeOptions, readConfigFile } from '../agent/cli';
import { TetherHub } from '../master-plugin/hub';
import { UsageError } from '../wire/transport';
import { AGENT_BIN } from './helpers/tether-procs';
import { tempDir } from './helpers/support';

const run = (args: string[], cwd?: string) =>
  spawnSync(process.execPath, [AGENT_BIN, ...args], { encoding: 'utf8', cwd, timeout: 20_000, env: { ...process.env, TETHER_SECRET: '' } });

function writeJson(file: string, value: unknown): string {
  fs.writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

/** Runs the Node-run agent with `args` (cwd `cwd`) against a hub knowing `board` until it connected; resolves with its log. */
async function connects(t: Test, args: (master: string) => string[], cwd: string): Promise<string> {
  const hub = new TetherHub({ workers: { board: 'config secret' } });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const child = spawn(process.execPath, [AGENT_BIN, ...args(`tcp://127.0.0.1:${address.port}`)], {
    cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TETHER_SECRET: '' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => void (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const remote = await Promise.race([
      hub.waitForAgent('board', 20_000),
      exited.then((code) => Promise.reject(new Error(`the agent exited (${code}): ${stderr}`))),
    ]);
    t.equal(remote.name, 'board');
  } finally {
    child.kill('SIGTERM');
    await exited;
    await hub.close();
  }
  return stderr;
}

t.test('--help describes --config', async (t) => {
  t.ok('config' in OPTIONS);
  t.match(HELP, /--config FILE/);
  t.match(HELP, /command line override/);
});

t.test('an agent started from a config file alone connects', async (t) => {
  const dir = await tempDir(t, 'tether-config-');
  fs.writeFileSync(path.join(dir, 'secret'), 'config secret\n', { mode: 0o600 });
  const config = (master: string) => writeJson(path.join(dir, 'agent.json'), {
    master, name: 'board', 'secret-file': 'secret', basedir: 'base', 'max-frame': 65536, verbose: false,
  });
  // started elsewhere: relative paths in the file are relative to the file
  const elsewhere = await tempDir(t, 'tether-config-');
  const log = await connects(t, (master) => ['--config', config(master)], elsewhere);
  t.match(log, /connected to tcp:\/\/127\.0\.0\.1:\d+ as 'board'/);
  t.ok(fs.statSync(path.join(dir, 'base')).isDirectory(), 'basedir relative to the config file');
  t.notOk(fs.existsSync(path.join(elsewhere, 'base')), 'not relative to the working directory');
});

t.test('command-line flags override the file', async (t) => {
  const dir = await tempDir(t, 'tether-config-');
  fs.writeFileSync(path.join(dir, 'secret'), 'config secret\n', { mode: 0o600 });
  const file = path.join(dir, 'agent.json');
  // the file names another worker and another master; the flags win
  writeJson(file, { master: 'tcp://127.0.0.1:1', name: 'someone-else', 'secret-file': path.join(dir, 'secret'), basedir: path.join(dir, 'base') });
  await connects(t, (master) => ['--config', file, '--master', master, '--name', 'board'], dir);
  // a secret on the command line replaces the file's secret-file (not "both given")
  writeJson(file, { name: 'board', 'secret-file': '/nonexistent/secret', basedir: path.join(dir, 'base') });
  await connects(t, (master) => ['--master', master, '--secret', 'config secret', '--config', file], dir);
});

t.test('mistakes in the file: one clear line naming the problem, exit 2', async (t) => {
  const dir = await tempDir(t, 'tether-config-');
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown.json', { master: 'tcp://h:1', nmae: 'board' }, /has an unknown key "nmae"/],
    ['help.json', { help: true }, /has an unknown key "help"/],
    ['config.json', { config: 'other.json' }, /has an unknown key "config"/],
    ['type.json', { name: ['board'] }, /"name" must be a string or a number/],
    ['bool.json', { verbose: 'yes' }, /"verbose" must be true or false/],
    ['array.json', ['master'], /must hold a JSON object of options/],
    ['broken.json', '{"master": ', /is not valid JSON/],
  ];
  for (const [name, content, pattern] of cases) {
    const r = run(['--config', writeJson(path.join(dir, name), content)]);
    t.equal(r.status, 2, `${name}: exit 2`);
    t.match(r.stderr, pattern, name);
    t.match(r.stderr, name, `${name}: names the file`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`);
  }
  const missing = run(['--config', path.join(dir, 'nope.json')]);
  t.equal(missing.status, 2);
  t.match(missing.stderr, /cannot read the config file .*nope\.json/);
  // what the file leaves out is still required
  const partial = run(['--config', writeJson(path.join(dir, 'partial.json'), { master: 'tcp://h:1', name: 'board' }), '--secret', 's']);
  t.equal(partial.status, 2);
  t.match(partial.stderr, /--basedir is required/);
});

t.test('readConfigFile and mergeOptions', async (t) => {
  const dir = await tempDir(t, 'tether-config-');
  const file = writeJson(path.join(dir, 'a.json'), { ca: 'certs/ca.pem', 'secret-file': '/abs/secret', host: 'rack 3', 'max-frame': 4096 });
  t.same(readConfigFile(file), { ca: path.join(dir, 'certs', 'ca.pem'), 'secret-file': '/abs/secret', host: 'rack 3', 'max-frame': '4096' });
  t.throws(() => readConfigFile(writeJson(path.join(dir, 'b.json'), { bogus: 1 })), UsageError);
  t.same(mergeOptions({ name: 'a', basedir: '/x', secret: 's' }, { name: 'b', 'secret-file': '/f' }), { name: 'b', basedir: '/x', 'secret-file': '/f' });
  t.same(mergeOptions({ name: 'a', verbose: true }, {}), { name: 'a', verbose: true });
});

t.test('"verbose": true in the file prints stack traces, as --verbose does', async (t) => {
  const dir = await tempDir(t, 'tether-config-');
  const settings = { master: 'http://not-a-master', name: 'board', secret: 's', basedir: path.join(dir, 'base') };
  const quiet = run(['--config', writeJson(path.join(dir, 'quiet.json'), settings)]);
  t.equal(quiet.status, 2);
  t.equal(quiet.stderr.trim().split('\n').length, 1, 'without: one line');
  const verbose = run(['--config', writeJson(path.join(dir, 'verbose.json'), { ...settings, verbose: true })]);
  t.equal(verbose.status, 2);
  t.match(verbose.stderr, /not an address like tcp:\/\/HOST:PORT/);
  t.match(verbose.stderr, /\n\s+at .*cli\.[jt]s:\d+/, 'with: the stack trace');
  const flag = run(['--config', path.join(dir, 'verbose.json'), '--verbose']);
  t.equal(flag.stderr.match(/^\s+at /gm)?.length, verbose.stderr.match(/^\s+at /gm)?.length, 'the stack once, with the flag too');
});
