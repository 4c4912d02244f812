/**
 * `tether-master exec` as users run it: a real exec process and a real agent
 * process on loopback. Exit codes, signals, stdin, Ctrl-C, env/workdir and
 * the errors a user hits; and, against an agent the test scripts, what exec
 * makes of a result or a header that a broken or hostile agent sends.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { AGENT_BIN, MASTER_BIN } from './helpers/tether-procs';
import { alive } from './helpers/processes';
import { Peer } from './helpers/wire-net';
import { type MessageOf, MsgType, type OutgoingMessage } from '../wire/messages';
import { MAX_PRINTABLE } from '../wire/printable';
import { freePort, listenLoopback, listening, makeTempDir, sleep, waitFor } from './helpers/support';

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  ms: number;
}

interface Agent {
  proc: ChildProcess;
  basedir: string;
  stop(): Promise<void>;
}

function collect(proc: ChildProcess): Promise<Exit> {
  const started = Date.now();
  const out: Buffer[] = [];
  let err = '';
  proc.stdout?.on('data', (d: Buffer) => out.push(d));
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => {
    proc.once('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: err, ms: Date.now() - started }));
  });
}

async function startAgent(t: Test, port: number, opts: { secret?: string; name?: string } = {}): Promise<Agent> {
  const dir = await makeTempDir('tether-exec-agent-');
  const secretFile = path.join(dir, 'secret');
  fs.writeFileSync(secretFile, `${opts.secret ?? 'sesame'}\n`, { mode: 0o600 });
  const basedir = path.join(dir, 'basedir');
  const proc = spawn(process.execPath, [
    AGENT_BIN, '--master', `tcp://127.0.0.1:${port}`, '--name', opts.name ?? 'rig', '--secret-file', secretFile, '--basedir', basedir,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const agent: Agent = {
    proc,
    basedir,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  t.teardown(() => agent.stop());
  t.teardown(() => {
    if (t.passing()) return;
    t.comment(`agent log:\n${log}`);
  });
  return agent;
}

interface ExecRun {
  proc: ChildProcess;
  done: Promise<Exit>;
  agent: Agent | null;
  port: number;
}

/** Starts `tether-master exec` and (unless agent: false) an agent for it. */
async function exec(
  t: Test,
  args: string[],
  opts: { agent?: false | { secret?: string; name?: string }; worker?: string; wait?: string; stdin?: 'pipe' | 'end' } = {},
): Promise<ExecRun> {
  const port = await freePort();
  const proc = spawn(process.execPath, [
    MASTER_BIN, 'exec', '--listen', `tcp://127.0.0.1:${port}`, '--worker', opts.worker ?? 'rig:sesame', '--wait', opts.wait ?? '20', ...args,
  ], { stdio: ['pipe', 'pipe', 'pipe'] });
  const done = collect(proc);
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  if ((opts.stdin ?? 'end') === 'end') proc.stdin?.end();
  await listening(port); // so that the agent's first attempt connects
  const agent = opts.agent === false ? null : await startAgent(t, port, opts.agent ?? {});
  return { proc, done, agent, port };
}

t.test('exit codes, and stdout/stderr kept apart without header lines', async (t) => {
  const ok = await exec(t, ['--', 'echo', 'hello', 'world']);
  const r0 = await ok.done;
  t.equal(r0.code, 0, r0.stderr);
  t.equal(r0.stdout.toString(), 'hello world\n', 'only the command output on stdout');
  t.equal(r0.stderr, '', 'nothing else on stderr');

  const three = await exec(t, ['--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
  const r3 = await three.done;
  t.equal(r3.code, 3);
  t.equal(r3.stdout.toString(), 'out\n');
  t.equal(r3.stderr, 'err\n');

  const line = await exec(t, ['--', 'echo one && exit 7']);
  const r7 = await line.done;
  t.equal(r7.code, 7, 'one argument is a shell command line');
  t.equal(r7.stdout.toString(), 'one\n');
});

t.test('a signal death is 128+N', async (t) => {
  const run = await exec(t, ['--', 'sh', '-c', 'kill -TERM $$']);
  const r = await run.done;
  t.equal(r.code, 143, r.stderr);
  t.equal(r.stdout.length, 0);
});

t.test('stdin is forwarded byte for byte, and EOF ends it', async (t) => {
  const data = randomBytes(1024 * 1024);
  const run = await exec(t, ['--', 'cat'], { stdin: 'pipe' });
  const stdin = run.proc.stdin!;
  stdin.write('line one\n');
  await sleep(100);
  stdin.write(data);
  stdin.end();
  const r = await run.done;
  t.equal(r.code, 0, r.stderr);
  const expected = Buffer.concat([Buffer.from('line one\n'), data]);
  t.equal(r.stdout.length, expected.length);
  t.equal(createHash('sha256').update(r.stdout).digest('hex'), createHash('sha256').update(expected).digest('hex'));
});

t.test('--no-stdin closes the remote stdin at once', async (t) => {
  const run = await exec(t, ['--no-stdin', '--', 'cat'], { stdin: 'pipe' });
  const r = await run.done; // would hang if cat waited for our (open) stdin
  t.equal(r.code, 0, r.stderr);
  run.proc.stdin?.destroy();
});

t.test('Ctrl-C kills the remote process tree and exits 130', async (t) => {
  const run = await exec(t, ['--workdir', 'ctrlc', '--', 'sh', '-c', 'sleep 30 & echo $$ $! > pids.tmp && mv pids.tmp pids; wait']);
  const pidFile = path.join(run.agent!.basedir, 'ctrlc', 'pids');
  const pids = await waitFor('the remote command to start', () => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim().split(/\s+/).map(Number), { timeoutMs: 20_000, intervalMs: 50 });
  t.equal(pids.length, 2);
  t.ok(pids.every(alive), 'the shell and its sleep run');
  run.proc.kill('SIGINT');
  const r = await run.done;
  t.equal(r.code, 130, r.stderr);
  await waitFor('the remote processes to be gone', () => pids.every((p) => !alive(p)), { timeoutMs: 5000, intervalMs: 50 });
  t.pass('the shell and its background sleep are gone');
});

t.test('--env and --workdir', async (t) => {
  const run = await exec(t, ['--env', 'GREETING=hi there', '--env', 'EMPTY=', '--workdir', 'a/b', '--', 'sh', '-c', 'echo "$GREETING|$EMPTY|$PWD"']);
  const r = await run.done;
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.toString(), `hi there||${path.join(run.agent!.basedir, 'a', 'b')}\n`);
});

t.test('--timeout kills a silent command and says so', async (t) => {
  const run = await exec(t, ['--timeout', '1', '--', 'sleep', '20']);
  const r = await run.done;
  t.equal(r.code, 137, 'killed by SIGKILL');
  t.match(r.stderr, /command timed out: 1 seconds without output/);
  t.ok(r.ms < 15_000);
});

t.test('a wrong secret is reported at once, and the wait goes on until --wait', async (t) => {
  const run = await exec(t, ['--', 'true'], { worker: 'rig:right-secret', agent: { secret: 'wrong-secret' }, wait: '3' });
  const r = await run.done;
  t.equal(r.code, 255);
  const lines = r.stderr.split('\n').filter(Boolean);
  t.match(lines[0], /tether-master: an agent calling itself 'rig' \(from 127\.0\.0\.1:\d+\) failed authentication; still waiting for one that passes/);
  t.match(lines[lines.length - 1], /^tether-master: agent 'rig' did not connect within 3 s: .* \(\d+ attempts? as 'rig' failed authentication: check the secret\)$/);
  t.ok(r.ms >= 3000, `waited for --wait (${r.ms} ms)`);
});

t.test('a bad proof from anyone does not end the wait: the command runs when the real agent comes', async (t) => {
  const run = await exec(t, ['--', 'echo', 'ran'], { agent: false });
  const impostor = await Peer.connect(run.port);
  t.teardown(() => impostor.destroy());
  impostor.sendLink({ type: MsgType.HELLO, params: { versionMin: 2, versionMax: 2, name: 'rig', nonce: randomBytes(32), caps: 0, maxFrame: 65536 } });
  await impostor.waitFor((m) => m.type === MsgType.CHALLENGE, 5000, 'CHALLENGE');
  impostor.sendLink({ type: MsgType.PROOF, proof: randomBytes(32) });
  await impostor.waitFor((m) => m.type === MsgType.ERROR, 10_000, 'ERROR');
  await startAgent(t, run.port);
  const r = await run.done;
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.toString(), 'ran\n');
  t.match(r.stderr, /^\S+ tether-master: an agent calling itself 'rig' \(from 127\.0\.0\.1:\d+\) failed authentication; still waiting for one that passes\n$/);
});

t.test('an agent that never comes', async (t) => {
  const run = await exec(t, ['--', 'true'], { agent: false, wait: '1' });
  const r = await run.done;
  t.equal(r.code, 255);
  t.equal(
    r.stderr,
    `tether-master: agent 'rig' did not connect within 1 s: is tether-agent running with --master tcp://127.0.0.1:${run.port} --name rig?\n`,
  );
});

t.test('an agent under another name is mentioned when the wait runs out', async (t) => {
  const run = await exec(t, ['--', 'true'], { agent: { name: 'rgi' }, wait: '2' });
  const r = await run.done;
  t.equal(r.code, 255);
  t.match(r.stderr, /did not connect within 2 s: .*\(refused agents named 'rgi': not configured workers, or a wrong secret\)\n$/);
});

/** A message of the scripted agent, for the stream of exec's command. */
type Reply = (stream: number) => OutgoingMessage;
const header = (text: string): Reply => (stream) => ({ type: MsgType.HEADER, stream, text });
const rc = (value: unknown): Reply => (stream) => ({ type: MsgType.UPDATE, stream, key: 'rc', value });

/**
 * An agent speaking raw frames for `run`: it authenticates as 'rig', reports
 * its INFO, and answers exec's START with `replies`, then COMPLETE.
 */
async function scriptedAgent(t: Test, run: ExecRun, replies: Reply[]): Promise<void> {
  const peer = await Peer.agent(run.port, 'rig', 'sesame');
  t.teardown(() => peer.destroy());
  peer.sendSequenced({ type: MsgType.INFO, info: { os: 'scripted' } });
  const { stream } = (await peer.waitFor((m) => m.type === MsgType.START, 10_000, 'START')) as MessageOf<typeof MsgType.START>;
  for (const reply of replies) peer.sendSequenced(reply(stream));
  peer.sendSequenced({ type: MsgType.COMPLETE, stream, failure: null });
}

t.test("an agent's result: an exit code or a signal, or else one line saying what is wrong and exit 255", async (t) => {
  const cases: Array<[string, Reply[], number, RegExp | '']> = [
    ['rc 3', [rc(3)], 3, ''],
    ['killed by signal 9', [header('process killed by signal 9\n'), rc(-1)], 137, ''],
    ['a command line quoting the kill notice', [header("sh -c 'echo process killed by signal 9'\n"), rc(0)], 0, ''],
    ['rc NaN', [rc(NaN)], 255, /rc NaN is not an exit code \(0 to 255, or -1 after "process killed by signal N"\)$/],
    ['rc 1.5', [rc(1.5)], 255, /rc 1\.5 is not an exit code/],
    ['rc 300', [rc(300)], 255, /rc 300 is not an exit code/],
    ['rc "abc"', [rc('abc')], 255, /rc 'abc' is not an exit code/],
    ['rc -1 without the header', [rc(-1)], 255, /rc -1 \(killed\) without a "process killed by signal N" header$/],
    ['a signal that is none', [header('process killed by signal 99999999999999999999\n'), rc(-1)], 255,
      /"process killed by signal 99999999999999999999" names no signal \(1 to 127\)$/],
    ['no rc', [], 255, /no rc before the command ended$/],
  ];
  for (const [what, replies, code, says] of cases) {
    const run = await exec(t, ['--', 'true'], { agent: false });
    await scriptedAgent(t, run, replies);
    const r = await run.done;
    t.equal(r.code, code, `${what}: exit ${code}`);
    if (!says) {
      t.equal(r.stderr, '', `${what}: nothing on stderr`);
      continue;
    }
    t.equal(r.stderr.split('\n').filter(Boolean).length, 1, `${what}: one line (${r.stderr.slice(0, 300)})`);
    t.match(r.stderr, /^tether-master: agent 'rig' sent a bad result: /, `${what}: says the agent got it wrong`);
    t.match(r.stderr.trimEnd(), says, `${what}: says what`);
  }
});

t.test("--verbose: each of the agent's header lines is a log line of its own, marked, escaped and bounded", async (t) => {
  const run = await exec(t, ['--verbose', '--', 'true'], { agent: false });
  const forging = '\u001b[31mred\rback\nFAKE-LOG-LINE tether-master: worker good connected\n';
  await scriptedAgent(t, run, [header(forging), header('\u0007'.repeat(20_000)), rc(0)]);
  const r = await run.done;
  t.equal(r.code, 0);
  const lines = r.stderr.split('\n').filter(Boolean);
  const prefix = /^\d{4}-\d\d-\d\dT[\d:.]+Z tether-master: /;
  t.ok(lines.every((l) => prefix.test(l)), 'every line is a log line of tether-master');
  t.notOk(/[\u0000-\u0009\u000b-\u001f]/.test(r.stderr), 'no control character but the line ends');
  const headers = lines.map((l) => l.replace(prefix, '')).filter((l) => l.startsWith('header: '));
  t.equal(headers[0], 'header: \\x1b[31mred\\rback');
  t.equal(headers[1], 'header: FAKE-LOG-LINE tether-master: worker good connected', 'a line that would pass for the hub\'s is marked as a header');
  t.match(headers[2], /^header: (\\x07)+ …\[\d+ characters cut\]… (\\x07)+$/, 'a long header line is cut in the middle');
  t.ok(headers[2].length <= MAX_PRINTABLE, `and bounded (${headers[2].length} characters)`);
});

t.test('usage mistakes: one line, exit 2', async (t) => {
  const blocker = net.createServer();
  const busy = await listenLoopback(blocker);
  t.teardown(() => blocker.close());
  const cases: Array<[string[], RegExp]> = [
    [['exec', '--listen', `tcp://127.0.0.1:${busy}`, '--worker', 'rig:s', '--', 'true'], new RegExp(`tcp://127.0.0.1:${busy} is already in use`)],
    [['exec', '--listen', 'serial:///dev/tether-no-such-tty', '--worker', 'rig:s', '--', 'true'], /serial device \/dev\/tether-no-such-tty does not exist/],
    [['exec', '--listen', 'tcp://127.0.0.1:0', '--worker', 'rig:s'], /exec needs a command/],
    [['exec', '--listen', 'tcp://127.0.0.1:0', '--worker', 'a:s', '--worker', 'b:s', '--', 'true'], /choose one with --agent NAME/],
    [['exec', '--listen', 'tcp://127.0.0.1:0', '--worker', 'rig:s', '--env', 'NOEQUALS', '--', 'true'], /--env takes K=V/],
    [['exec', '--worker', 'rig:s', '--', 'true'], /--listen is required/],
    [['put', '--listen', 'tcp://127.0.0.1:0', '--worker', 'rig:s', 'only-one'], /put takes LOCAL REMOTE/],
  ];
  for (const [args, pattern] of cases) {
    const proc = spawn(process.execPath, [MASTER_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const r = await collect(proc);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, pattern);
    t.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line (${r.stderr})`);
  }
});

t.test('exec --help', async (t) => {
  const r = await collect(spawn(process.execPath, [MASTER_BIN, 'exec', '--help'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  t.equal(r.code, 0);
  t.match(r.stdout.toString(), /Usage: tether-master exec/);
  for (const flag of ['--workdir', '--env', '--timeout', '--wait', '--no-stdin', '--workers-file', '--cert', '--keepalive']) {
    t.match(r.stdout.toString(), flag);
  }
});
