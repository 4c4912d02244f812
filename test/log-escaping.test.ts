/**
 * Peer-supplied text in log lines: a worker name (or a PRINT) with a newline,
 * ANSI escapes and bidi controls cannot split a log line, forge one or colour
 * the terminal, and a long one cannot flood the log. Checked in printable()
 * itself, the hub's log, the agent's log, tether-master's stderr (a real
 * process), and TetherService's relay of that stderr into twistd.log.
 */
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { TetherHub } from '../master-plugin/hub';
import { MsgType } from '../wire/messages';
import { MAX_PRINTABLE, printable, printableStack } from '../wire/printable';
import { PLUGIN_DIR, PYTHON, buildbotEnv } from './helpers/buildbot';
import { MASTER_BIN } from './helpers/tether-procs';
import { Peer, rawAgent, startAgent, startHub } from './helpers/wire-net';
import { freePort, waitFor } from './helpers/support';

/** A name that, written raw, would end the line, forge a "connected" line and turn the terminal red. */
const EVIL = "rig\n2030-01-01T00:00:00.000Z tether-master: worker 'rig' connected from 10.0.0.1:1\u001b[31m\u202e\u0085\u2028x";
const ESCAPED = "rig\\n2030-01-01T00:00:00.000Z tether-master: worker 'rig' connected from 10.0.0.1:1\\x1b[31m\\u202e\\x85\\u2028x";
/** Text for an assertion message, all but ASCII escaped: raw controls would break TAP itself. */
const shown = (value: unknown) => JSON.stringify(value).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
/** What no log line may hold: the controls of EVIL. */
const CONTROLS = /[\n\r\u001b\u0085\u2028\u202e]/;

t.test('printable escapes controls, separators and bidi marks, and nothing else', async (t) => {
  t.equal(printable(EVIL), ESCAPED);
  t.equal(printable('tab\there\r\0\u007f\u009b\u061c\u200e\u2066\u2029'), 'tab\\there\\r\\x00\\x7f\\x9b\\u061c\\u200e\\u2066\\u2029');
  t.equal(printable('plain ASCII, Grüße, 日本語, 🙂, a\\nb'), 'plain ASCII, Grüße, 日本語, 🙂, a\\nb', 'printable text is kept, backslashes too');
  t.equal(printable(printable(EVIL)), printable(EVIL), 'escaping twice changes nothing');
});

t.test('printable bounds what it returns: the middle of long text is cut, whole characters and escapes, for a mark', async (t) => {
  const long = `start ${'x'.repeat(300_000)} end`;
  const cut = printable(long);
  t.ok(cut.length <= MAX_PRINTABLE, `at most ${MAX_PRINTABLE} characters (${cut.length})`);
  t.match(cut, /^start x+ …\[\d+ characters cut\]… x+ end$/, 'its start and its end stay');
  const [, count] = /\[(\d+) characters cut\]/.exec(cut)!;
  t.equal(cut.length - cut.match(/ …\[\d+ characters cut\]… /)![0].length + Number(count), long.length, 'the mark counts what was cut');
  t.equal(printable(cut), cut, 'escaping twice changes nothing');

  const controls = printable('\u001b'.repeat(10_000));
  t.ok(controls.length <= MAX_PRINTABLE, 'escapes count: control characters grow fourfold');
  t.match(controls, /^(\\x1b)+ …\[\d+ characters cut\]… (\\x1b)+$/, 'no escape is split');
  t.equal(printable('\u0001'.repeat(300)).length <= MAX_PRINTABLE, true, 'short text that grows past the bound is cut too');
  const smiles = printable('🙂'.repeat(5000));
  t.notOk(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(smiles), 'no surrogate pair is split');
  t.equal(printable('x'.repeat(MAX_PRINTABLE)), 'x'.repeat(MAX_PRINTABLE), 'text within the bound is whole');

  const error = new Error(`peer: ${'y'.repeat(5000)}\nforged`);
  const stack = printableStack(error).split('\n');
  t.match(stack[0], /^Error: peer: y+ …\[\d+ characters cut\]… y+\\nforged$/, 'a stack trace: its message one bounded line');
  t.ok(stack.length > 1 && stack.slice(1).every((l) => l.startsWith('    at ')), 'then one line per frame');
});

/** Connects as a peer claiming `name` and fails its proof. */
async function badAttempt(port: number, name: string): Promise<void> {
  const peer = await Peer.connect(port);
  peer.sendLink({ type: MsgType.HELLO, params: { versionMin: 2, versionMax: 2, name, nonce: randomBytes(32), caps: 0, maxFrame: 65536 } });
  await peer.waitFor((m) => m.type === MsgType.CHALLENGE, 5000, 'CHALLENGE');
  peer.sendLink({ type: MsgType.PROOF, proof: randomBytes(32) });
  await peer.waitClosed(10_000);
}

t.test("the hub's log escapes a claimed worker name", async (t) => {
  const lines: string[] = [];
  const fx = await startHub({ rig: 'sesame' }, { log: (l) => lines.push(l), failureDelay: 0 });
  t.teardown(() => fx.close());
  await badAttempt(fx.port, EVIL);
  await waitFor('the rejection to be logged', () => lines.some((l) => l.includes('rejected')), { timeoutMs: 5000 });
  const rejected = lines.find((l) => l.includes('rejected'))!;
  t.ok(rejected.includes(ESCAPED), `the name is escaped: ${shown(rejected)}`);
  t.notOk(lines.some((l) => CONTROLS.test(l)), 'no log line holds a control character');
});

t.test("the hub's log bounds an agent's text: a REJECT of 20000 control characters is one line of at most MAX_PRINTABLE", async (t) => {
  const lines: string[] = [];
  const fx = await startHub({ rig: 'sesame' }, { log: (l) => lines.push(l) });
  t.teardown(() => fx.close());
  const { peer } = await rawAgent(fx, 'rig', 'sesame');
  t.teardown(() => peer.destroy());
  for (let i = 0; i < 3; i++) peer.sendSequenced({ type: MsgType.REJECT, stream: 100 + i, code: 12, message: '\u0001'.repeat(20_000) });
  await waitFor('the REJECTs to be logged', () => lines.filter((l) => l.includes('ignored')).length === 3, { timeoutMs: 5000 });
  const rejects = lines.filter((l) => l.includes('ignored'));
  t.ok(rejects.every((l) => l.length <= MAX_PRINTABLE), `each at most ${MAX_PRINTABLE} characters (${rejects.map((l) => l.length)})`);
  // escaped (and cut) as it arrives, then again as a log line: that cut sees \x01 as text and may split it
  t.ok(rejects.every((l) => /^worker 'rig' rejected stream 10\d, which is not running: UNKNOWN_STREAM \\x01[\\x01]* …\[\d+ characters cut\]… [\\x01]*; ignored$/.test(l)),
    `cut in the middle, the line's start and end kept: ${rejects[0]!.slice(0, 80)}...${rejects[0]!.slice(-80)}`);
});

t.test("the agent's log escapes what the master prints", async (t) => {
  const fx = await startHub({ rig: 'sesame' });
  t.teardown(() => fx.close());
  const agent = startAgent(fx.port, 'rig', 'sesame');
  t.teardown(() => agent.stop());
  const remote = await fx.hub.waitForAgent('rig', 5000);
  remote.print(EVIL);
  await waitFor('the message to be logged', () => agent.logs.some((l) => l.includes('message from master')), { timeoutMs: 5000 });
  t.ok(agent.logs.some((l) => l.includes(ESCAPED)), 'the text is escaped');
  t.notOk(agent.logs.some((l) => CONTROLS.test(l)), 'no log line holds a control character');
});

t.test("tether-master's stderr escapes a claimed worker name", async (t) => {
  const port = await freePort();
  const proc = spawn(process.execPath, [MASTER_BIN, '--listen', `tcp://127.0.0.1:${port}`, '--worker', 'rig:sesame'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  t.teardown(async () => {
    if (proc.exitCode === null) proc.kill('SIGTERM');
    await exited;
  });
  await waitFor('tether-master to listen', () => /listening on/.test(stderr), { timeoutMs: 20_000 });
  await badAttempt(port, EVIL);
  await waitFor('the rejection to be logged', () => /rejected/.test(stderr), { timeoutMs: 10_000 });
  proc.kill('SIGTERM');
  await exited;
  const lines = stderr.split('\n').filter(Boolean);
  t.ok(lines.every((l) => /^\d{4}-\d\d-\d\dT[\d:.]+Z tether-master: /.test(l)), `every line is one log line: ${shown(lines)}`);
  t.notOk(lines.some((l) => l.startsWith('2030-01-01')), 'no forged line');
  t.ok(lines.some((l) => l.includes(ESCAPED)), 'the name is escaped');
  t.notOk(CONTROLS.test(stderr.replace(/\n/g, '')), 'no control character but the line ends');
});

t.test("TetherService relays tether-master's output escaped into twistd.log", async (t) => {
  // Lines are split at \n: what a line holds besides must not colour or reorder twistd.log.
  const line = "worker 'x\u001b[31m\u202e\u0085\u2028\u0007y' refused";
  const script = [
    'import json, sys',
    'from twisted.python import log',
    'from tether_buildbot.service import _ChildProtocol',
    'seen = []',
    "log.addObserver(lambda e: seen.append(''.join(e['message'])))",
    "p = _ChildProtocol(None, b'', lambda text: text)",
    "p.errReceived(sys.argv[1].encode() + b'\\n')",
    'print(json.dumps(seen))',
  ].join('\n');
  const out = await new Promise<string>((resolve, reject) => {
    execFile(PYTHON, ['-c', script, line], { env: buildbotEnv({ PYTHONPATH: PLUGIN_DIR }) }, (error, stdout, stderr) =>
      error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout));
  });
  t.equal(shown(JSON.parse(out)), shown(["tether: (stderr) worker 'x\\x1b[31m\\u202e\\x85\\u2028\\x07y' refused"]));
});

t.test('a short secret is warned about: it can be guessed offline against the proof any HELLO draws', async (t) => {
  const logs: string[] = [];
  const hub = new TetherHub({ workers: { weak: 'sesame', strong: 'f3a9c1e07b2d4e8a9c6b1f0e2d3c4b5a' }, log: (l) => logs.push(l) });
  t.teardown(() => hub.close());
  t.same(logs, [], 'not before it listens');
  await hub.listen('tcp://127.0.0.1:0');
  t.equal(logs.filter((l) => /short secret/.test(l)).length, 1, 'one warning');
  t.match(logs.join('\n'), /worker 'weak' has a short secret \(6 characters\)/);
  hub.setWorkers({ weak2: 'abc' });
  t.match(logs.join('\n'), /worker 'weak2' has a short secret/, 'and when the workers change');
});
