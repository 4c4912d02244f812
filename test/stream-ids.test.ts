/**
 * Stream ids are never reused within a session (not even a refused START's),
 * so a late message for a finished command can never reach, or fail, another
 * one, and a REJECT fails the command it names: through the public API
 * against a real agent, and with raw frames from a fake agent or master.
 */
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { commands } from '../agent/commands/registry';
import type { AgentConnection } from '../master-plugin/agent-connection';
import { RemoteCommandError, putFile, runShell } from '../master-plugin/index';
import { encodeSequence } from '../wire/cbor';
import { errorName } from '../wire/errors';
import { type MessageOf, MsgType, type OutgoingMessage, decodeMessage, encodeMessage } from '../wire/messages';
import { MAX_STREAM_ID } from '../wire/stream-ids';
import { startPair } from './helpers/pair';
import { echo, rawAgent, rawMaster, startHub, testCommands } from './helpers/wire-net';
import { makeTempDir, waitFor, withTimeout } from './helpers/support';

t.test('a failed putFile, then 3 shell commands, 20 rounds: every command gets its own result', async (t) => {
  const dir = await makeTempDir('tether-ids-');
  const basedir = path.join(dir, 'base');
  fs.mkdirSync(path.join(basedir, 'adir'), { recursive: true });
  const local = path.join(dir, 'big');
  // More than a window: DATA is still on its way when the agent has refused the file.
  fs.writeFileSync(local, Buffer.alloc(4 * 1024 * 1024, 7));
  const p = await startPair(commands, { basedir });
  t.teardown(async () => {
    await p.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const crossed: string[] = [];
  let putsFailed = 0;
  for (let round = 0; round < 20; round++) {
    // 'adir' is a directory: the agent cannot open it for writing and completes at once.
    const put = await putFile(p.remote, local, 'adir').then(
      () => null,
      (error: Error) => error,
    );
    if (put instanceof RemoteCommandError && put.rc === 1) putsFailed++;
    else crossed.push(`round ${round}: the failed put reported ${put ? put.message : 'success'}`);
    const shell = async (n: number) => {
      const run = runShell(p.remote, `echo out${n}; exit ${n}`);
      let out = '';
      for await (const { data } of run.output) out += data.toString();
      const r = await run.result.catch((error: Error) => ({ rc: -1, failure: { code: 'lost', message: error.message } }));
      return { n, out, rc: r.rc, failure: r.failure };
    };
    // Even rounds start the three at once, odd rounds one after the other.
    const results = [];
    if (round % 2 === 0) results.push(...(await Promise.all([1, 2, 3].map(shell))));
    else for (const n of [1, 2, 3]) results.push(await shell(n));
    for (const r of results) {
      if (r.out !== `out${r.n}\n` || r.rc !== r.n || r.failure) crossed.push(`round ${round}: command ${r.n} got ${JSON.stringify(r)}`);
    }
  }
  t.same(crossed, [], 'no command got another command\'s result, no failed put reported success');
  t.equal(putsFailed, 20, 'each of the 20 puts failed, with the agent\'s rc 1');
});

t.test('late STDIN null, DATA, EOF, CREDIT and INTERRUPT after COMPLETE: no REJECT, the session goes on', async (t) => {
  const logs: string[] = [];
  const p = await startPair(testCommands(), { hub: { log: (line) => logs.push(line) } });
  t.teardown(() => p.close());
  const conn = p.remote as AgentConnection;
  const rejects: Array<[number | null, string | undefined]> = [];
  conn.on('reject', (m: MessageOf<typeof MsgType.REJECT>) => rejects.push([m.stream, errorName(m.code)]));

  const first = p.remote.run('echo', { text: 'one' }, {});
  t.same(await first.result, { failure: null });
  const id = first.stream;
  // What a master may still have on the wire when the agent's COMPLETE crosses it.
  const late: OutgoingMessage[] = [
    { type: MsgType.STDIN, stream: id, data: Buffer.from('late') },
    { type: MsgType.STDIN, stream: id, data: null },
    { type: MsgType.DATA, stream: id, data: Buffer.from('late') },
    { type: MsgType.EOF, stream: id, times: null },
    { type: MsgType.CREDIT, stream: id, bytes: 4096 },
    { type: MsgType.INTERRUPT, stream: id, why: 'late' },
  ];
  for (const m of late) conn.session.send(m);
  const second = p.remote.run('echo', { text: 'two' }, {});
  t.same(await second.result, { failure: null }, 'the next command completes');
  t.equal(second.stream, id + 1, 'on the next id: ids are never reused');
  t.same(rejects, [], 'no REJECT for the late messages');

  // An id never started is the master's mistake: REJECT UNKNOWN_STREAM, and it fails nothing.
  conn.session.send({ type: MsgType.DATA, stream: id + 100, data: Buffer.from('x') });
  // A START that reuses an id is refused: REJECT BAD_MESSAGE.
  conn.session.send({ type: MsgType.START, stream: id, command: 'echo', args: { text: 'again' } });
  t.equal(await echo(p.remote, 'three'), 'three', 'the session goes on');
  t.same(rejects, [[id + 100, 'UNKNOWN_STREAM'], [id, 'BAD_MESSAGE']]);
  t.equal(logs.filter((l) => /rejected stream \d+, which is not running/.test(l)).length, 2, 'the master logs the REJECTs it ignores');
  t.notOk(conn.session.isClosed);
});

t.test('a START the agent cannot read (args not a map): the REJECT names its stream, and the command fails at once', async (t) => {
  const p = await startPair(testCommands());
  t.teardown(() => p.close());
  const conn = p.remote as AgentConnection;
  const rejects: Array<[number | null, string | undefined]> = [];
  conn.on('reject', (m: MessageOf<typeof MsgType.REJECT>) => rejects.push([m.stream, errorName(m.code)]));

  const notAMap = ['text', 'x'] as unknown as Record<string, unknown>;
  const refused = conn.run('echo', notAMap, {});
  t.same(
    await withTimeout(refused.result, 5000, 'the refused command to fail'),
    { failure: { code: 'BAD_MESSAGE', message: 'arguments must be a map' } },
    "the agent's error, on the command it refused",
  );
  t.same(rejects, [[refused.stream, 'BAD_MESSAGE']]);
  t.equal(await echo(p.remote, 'next'), 'next', 'the session goes on');
  t.notOk(conn.session.isClosed);
});

t.test('agent: a START with too few fields or args not a map: REJECT BAD_MESSAGE on its stream, whose id is used', async (t) => {
  const peer = await rawMaster(t, 16 * 1024, testCommands());
  const rejects = () => peer.received.filter((m): m is MessageOf<typeof MsgType.REJECT> => m.type === MsgType.REJECT);
  peer.sendBody(encodeSequence([MsgType.START, 5, 'echo']));
  peer.sendBody(encodeSequence([MsgType.START, 6, 'echo', 'not a map']));
  // Messages the master sent after those STARTs are late messages of a finished stream: ignored.
  peer.sendSequenced({ type: MsgType.INTERRUPT, stream: 5, why: 'late' });
  peer.sendSequenced({ type: MsgType.STDIN, stream: 6, data: null });
  // The id was used: a START that reuses it is refused, the next one runs.
  peer.sendSequenced({ type: MsgType.START, stream: 6, command: 'echo', args: { text: 'again' } });
  peer.sendSequenced({ type: MsgType.START, stream: 7, command: 'echo', args: { text: 'next' } });
  await peer.waitFor((m) => m.type === MsgType.COMPLETE && m.stream === 7, 5000, 'COMPLETE of stream 7');
  t.same(
    rejects().map((m) => [m.stream, errorName(m.code), m.message]),
    [
      [5, 'BAD_MESSAGE', 'message type 11 needs 3 fields, has 2'],
      [6, 'BAD_MESSAGE', 'arguments must be a map'],
      [6, 'BAD_MESSAGE', 'stream 6 is not above the last one started, 6: ids are never reused'],
    ],
  );
});

/** A hub, a raw agent of it, and two commands the hub started on it (their STARTs arrived). */
async function twoCommandsOnARawAgent(t: Test) {
  const logs: string[] = [];
  const fx = await startHub({ fake: 'secret-1' }, { log: (line) => logs.push(line) });
  t.teardown(() => fx.close());
  const { peer, remote } = await rawAgent(fx, 'fake', 'secret-1');
  t.teardown(() => peer.destroy());
  const a = remote.run('a', {}, {});
  const b = remote.run('b', {}, {});
  await peer.waitFor((m) => m.type === MsgType.START && m.stream === b.stream, 5000, 'START b');
  return { logs, peer, a, b };
}

t.test('a REJECT fails only the running command it names; one naming no running command is logged, escaped, and ignored', async (t) => {
  const { logs, peer, a, b } = await twoCommandsOnARawAgent(t);

  const forged = 'done\n[hub] worker admin logged in \x1b[31m';
  peer.sendSequenced({ type: MsgType.REJECT, stream: b.stream + 5, code: 12, message: forged });
  peer.sendSequenced({ type: MsgType.REJECT, stream: null, code: 4, message: forged });
  peer.sendSequenced({ type: MsgType.REJECT, stream: b.stream, code: 13, message: "this agent has no command 'b'" });
  peer.sendSequenced({ type: MsgType.COMPLETE, stream: a.stream, failure: null });
  t.same(await a.result, { failure: null }, 'the other command is not touched');
  t.same(await b.result, { failure: { code: 'UNKNOWN_COMMAND', message: "this agent has no command 'b'" } });
  const ignored = logs.filter((l) => l.includes('ignored'));
  t.equal(ignored.length, 2, 'both ignored REJECTs are logged');
  t.ok(ignored.every((l) => !/[\n\x1b]/.test(l)), 'with the peer\'s text escaped');
  t.ok(ignored[0].includes(String.raw`done\n[hub] worker admin logged in \x1b[31m`), ignored[0]);
  t.notOk(peer.isClosed, 'the session goes on');
});

/**
 * A raw master and a real agent whose command 'wait' runs until it is
 * interrupted, then still writes output and an rc, as a command whose process
 * dies of the interrupt does: none of that may reach a master that has ended it.
 */
async function waitingCommand(t: Test) {
  const state = { started: false, interrupted: null as string | null, done: false };
  const peer = await rawMaster(t, 16 * 1024, {
    ...testCommands(),
    async wait(_args, io) {
      state.started = true;
      await new Promise<void>((resolve) => io.signal.addEventListener('abort', () => resolve(), { once: true }));
      state.interrupted = String(io.signal.reason);
      await io.stdout(Buffer.from('after the interrupt'));
      io.update('rc', -1);
      state.done = true;
    },
  });
  peer.sendSequenced({ type: MsgType.START, stream: 1, command: 'wait', args: {} });
  await waitFor('the command to start', () => state.started, { timeoutMs: 5000, intervalMs: 10 });
  /** Once the command has ended, what the agent sent on stream 1 (a later command's COMPLETE comes after it all). */
  const sentOnStream1 = async (): Promise<string[]> => {
    await waitFor('the command to end', () => state.done, { timeoutMs: 5000, intervalMs: 10 });
    peer.sendSequenced({ type: MsgType.START, stream: 2, command: 'echo', args: { text: 'next' } });
    await peer.waitFor((m) => m.type === MsgType.COMPLETE && m.stream === 2, 5000, 'COMPLETE of stream 2');
    return peer.received.filter((m) => 'stream' in m && m.stream === 1).map((m) => String(m.type));
  };
  return { peer, state, sentOnStream1 };
}

t.test("agent: refusing the master's message for a running command ends it: stopped as by INTERRUPT, nothing more on its stream", async (t) => {
  const { peer, state, sentOnStream1 } = await waitingCommand(t);
  peer.sendBody(encodeSequence([MsgType.STDIN, 1, 42]));
  const reject = (await peer.waitFor((m) => m.type === MsgType.REJECT, 5000, 'REJECT')) as MessageOf<typeof MsgType.REJECT>;
  t.same([reject.stream, errorName(reject.code)], [1, 'BAD_MESSAGE'], 'the REJECT names the command, which the master fails');
  await waitFor('the command to be interrupted', () => state.interrupted !== null, { timeoutMs: 5000, intervalMs: 10 });
  t.match(state.interrupted, /refused a message of the master's for it \(stdin data must be a byte string\)/);
  t.same(await sentOnStream1(), [String(MsgType.REJECT)], 'no output, rc or COMPLETE after the REJECT');
});

t.test('agent: a REJECT from the master naming a running command ends it: stopped as by INTERRUPT, nothing more on its stream', async (t) => {
  const { peer, state, sentOnStream1 } = await waitingCommand(t);
  peer.sendSequenced({ type: MsgType.REJECT, stream: 1, code: 4, message: 'your output did not decode' });
  await waitFor('the command to be interrupted', () => state.interrupted !== null, { timeoutMs: 5000, intervalMs: 10 });
  t.match(state.interrupted, /the master rejected a message of it/);
  t.same(await sentOnStream1(), [], 'no output, rc or COMPLETE after the REJECT');
  peer.sendSequenced({ type: MsgType.REJECT, stream: 1, code: 4, message: 'again' });
  peer.sendSequenced({ type: MsgType.START, stream: 3, command: 'echo', args: { text: 'on' } });
  await peer.waitFor((m) => m.type === MsgType.COMPLETE && m.stream === 3, 5000, 'COMPLETE of stream 3');
  t.notOk(peer.isClosed, 'a REJECT naming a command that has ended changes nothing; the session goes on');
});

t.test("master: refusing the agent's message for a running command fails that command with the REJECT's error; others go on", async (t) => {
  const { peer, a, b } = await twoCommandsOnARawAgent(t);
  // STDIN goes to the agent only.
  peer.sendSequenced({ type: MsgType.STDIN, stream: a.stream, data: Buffer.from('x') });
  const reject = (await peer.waitFor((m) => m.type === MsgType.REJECT, 5000, 'REJECT')) as MessageOf<typeof MsgType.REJECT>;
  t.equal(reject.stream, a.stream, 'the REJECT names the command, which the agent stops');
  t.same(
    await withTimeout(a.result, 5000, 'the command to fail'),
    { failure: { code: 'BAD_MESSAGE', message: reject.message } },
    'the command fails with what the master told the agent',
  );
  peer.sendSequenced({ type: MsgType.COMPLETE, stream: b.stream, failure: null });
  t.same(await b.result, { failure: null }, 'the other command is not touched');
  t.notOk(peer.isClosed, 'the session goes on');
});

t.test('ids do not wrap: after the last one the session ends once idle, and the next one counts from 0', async (t) => {
  const p = await startPair(testCommands());
  t.teardown(() => p.close());
  const conn = p.remote as AgentConnection;
  // Two billion commands would take too long: start at the last id.
  (conn as unknown as { nextStream: number }).nextStream = MAX_STREAM_ID;
  let out = '';
  const last = conn.run('echo', { text: 'last' }, { stdout: (c) => void (out += c.toString()) });
  const refused = conn.run('echo', { text: 'one too many' }, {});
  await t.rejects(refused.result, { code: 'SESSION_EXPIRED' }, 'no id is left for another command');
  t.same(await last.result, { failure: null });
  t.equal(last.stream, MAX_STREAM_ID);
  t.equal(out, 'last', 'output on the last id (its head is -2^32) arrives');
  await withTimeout(conn.closed, 5000, 'the session to end');
  const next = (await p.hub.waitForAgent('w1', 5000)) as AgentConnection;
  t.not(next, conn, 'the agent came back with a new session');
  const first = next.run('echo', { text: 'first' }, {});
  t.same(await first.result, { failure: null });
  t.equal(first.stream, 0);
});

t.test('the last id fits the output head: -1 - (2 × (2^31 - 1) + channel) in a 32-bit argument', async (t) => {
  for (const channel of [0, 1] as const) {
    const body = encodeMessage({ type: 'output', stream: MAX_STREAM_ID, channel, data: Buffer.from('x') });
    t.equal(body.subarray(0, 5).toString('hex'), channel === 0 ? '3afffffffe' : '3affffffff', `channel ${channel}`);
    t.same(decodeMessage(body), { type: 'output', stream: MAX_STREAM_ID, channel, data: Buffer.from('x') });
  }
});
