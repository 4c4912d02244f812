/** The two programs as users run them: help, version, and one clear line for each mistake. */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as net from 'node:net';
import * as agentCli from '../agent/cli';
import * as masterCli from '../master-plugin/cli';
import { VERSION } from '../wire/version';
import { AGENT_BIN, MASTER_BIN } from './helpers/tether-procs';
import { listenLoopback } from './helpers/support';

const run = (bin: string, args: string[], input?: string) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', input, timeout: 20_000, env: { ...process.env, TETHER_SECRET: '' } });

t.test('--help describes every flag', async (t) => {
  for (const [bin, cli] of [[AGENT_BIN, agentCli], [MASTER_BIN, masterCli]] as const) {
    const r = run(bin, ['--help']);
    t.equal(r.status, 0);
    t.equal(r.stdout, cli.HELP);
    for (const flag of Object.keys(cli.OPTIONS)) t.match(r.stdout, `--${flag}`, `${bin} --help names --${flag}`);
  }
});

t.test('--version matches package.json', async (t) => {
  t.equal(VERSION, require('../package.json').version);
  t.equal(run(AGENT_BIN, ['--version']).stdout, `tether-agent ${VERSION}\n`);
  t.equal(run(MASTER_BIN, ['--version']).stdout, `tether-master ${VERSION}\n`);
});

t.test('mistakes give one clear line and a non-zero exit, no stack trace', async (t) => {
  const cases: Array<[string, string[], RegExp, string?]> = [
    [AGENT_BIN, ['--bogus'], /Unknown option '--bogus'/],
    [AGENT_BIN, ['--master', 'tcp://h:1', '--name', 'n', '--basedir', '/tmp/x'], /no secret: give --secret-file/],
    [AGENT_BIN, ['--master', 'http://h', '--name', 'n', '--basedir', '/tmp/x', '--secret', 's'], /not an address like tcp:\/\/HOST:PORT/],
    [AGENT_BIN, ['--master', 'tcp://h:1', '--name', 'n', '--basedir', '/tmp/x', '--secret-file', '/nonexistent/f'], /cannot read the secret file/],
    [AGENT_BIN, ['--master', 'tcp://h:1', '--name', 'n', '--basedir', '/tmp/x', '--secret', 's', '--window', '512'], /--window must be an integer from 1024 to 16777216/],
    [AGENT_BIN, ['--master', 'tcp://h:1', '--name', 'n', '--basedir', '/tmp/x', '--secret', 's', '--max-frame', '63'], /--max-frame must be an integer of at least 64/],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0'], /no workers: give --worker/],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'nocolon'], /--worker takes NAME:SECRET/],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--workers-file', '-'], /has no "workers" list/, '{}'],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--buildbot', 'http://x'], /--buildbot takes ws:\/\/HOST:PORT/],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--buildbot', 'ws://192.0.2.1:9989'],
      /--buildbot ws:\/\/192\.0\.2\.1:9989 is refused: .*secret.* in clear\. Use wss:\/\/HOST:PORT .* or run tether-master on the Buildbot host/],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--buildbot', 'ws://127.0.0.1:9989', '--buildbot-ca', 'ca.pem'], /--buildbot-ca needs --buildbot wss:/],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--buildbot', 'wss://127.0.0.1:9989', '--buildbot-ca', '/nonexistent/ca.pem'], /cannot read --buildbot-ca: ENOENT/],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--compress', 'tcp'], /--compress takes serial, always, never, not 'tcp'/],
    // Values every agent would refuse in CHALLENGE (PROTOCOL.md 6.3): a master that could never keep an agent.
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--keepalive', '2147484'], /--keepalive must be an integer from 1 to 3600/],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--keepalive', '0'], /--keepalive must be an integer from 1 to 3600/],
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--window', String(2 ** 40)], /--window must be an integer from 1024 to 16777216/],
    [MASTER_BIN, ['exec', '--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--window', '16777217', '--', 'true'], /--window must be an integer from 1024 to 16777216/],
    // A grace beyond Node's timers expired every dropped session at once.
    [MASTER_BIN, ['--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--grace', '2592000'], /--grace must be an integer from 1 to 86400/],
    [MASTER_BIN, ['exec', '--listen', 'tcp://127.0.0.1:0', '--worker', 'a:b', '--grace', '86401', '--', 'true'], /--grace must be an integer from 1 to 86400/],
  ];
  for (const [bin, args, pattern, input] of cases) {
    const r = run(bin, args, input);
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, pattern);
    t.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
  }
});

t.test('a port in use is named, with what to do', async (t) => {
  const blocker = net.createServer();
  const port = await listenLoopback(blocker);
  t.teardown(() => blocker.close());
  const r = run(MASTER_BIN, ['--listen', `tcp://127.0.0.1:${port}`, '--worker', 'a:b']);
  t.equal(r.status, 2);
  t.match(r.stderr, `tcp://127.0.0.1:${port} is already in use`);
  t.notMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace');
});
