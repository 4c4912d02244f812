import t from 'tap';
import { randomBytes } from 'node:crypto';
import type { Command } from '../agent/commands/command';
import type { AgentConnection } from '../master-plugin/agent-connection';
import { MIN_MAX_FRAME } from '../wire/handshake';
import { startPair } from './helpers/pair';
import { echo, rawAgent, startAgent, startHub } from './helpers/wire-net';
import { MsgType } from '../wire/messages';

const commands: Record<string, Command> = {
  async echo(args, io) {
    const text = Buffer.from(String(args.text));
    await io.stdout(text);
    await io.stderr(Buffer.from('err'));
    io.header('done');
    io.update('rc', 0);
  },
  async blob(args, io) {
    const size = Number(args.size);
    const data = randomBytes(size);
    for (let at = 0; at < size; at += 100_000) await io.stdout(data.subarray(at, at + 100_000));
    io.update('sha', require('node:crypto').createHash('sha256').update(data).digest('hex'));
  },
  async download(_args, io) {
    let total = 0;
    for (let chunk = await io.readFile(); chunk; chunk = await io.readFile()) total += chunk.length;
    io.update('received', total);
  },
  async fail() {
    throw new Error('boom');
  },
};

t.test('a command streams output, header and updates in order', async (t) => {
  const pair = await startPair(commands);
  t.teardown(() => pair.close());
  const events: string[] = [];
  const cmd = pair.remote.run('echo', { text: 'hello' }, {
    stdout: (c) => void events.push(`out:${c}`),
    stderr: (c) => void events.push(`err:${c}`),
    header: (h) => void events.push(`hdr:${h}`),
    update: (k, v) => void events.push(`upd:${k}=${String(v)}`),
  });
  const result = await cmd.result;
  t.same(result, { failure: null });
  t.same(events, ['out:hello', 'err:err', 'hdr:done', 'upd:rc=0']);
  t.equal(pair.remote.info.hostname, require('node:os').hostname());
});

t.test('a slow consumer holds the agent to its window', async (t) => {
  const pair = await startPair(commands, { hub: { window: 64 * 1024 } });
  t.teardown(() => pair.close());
  const hash = require('node:crypto').createHash('sha256');
  let sha = '';
  let maxUnacked = 0;
  const cmd = pair.remote.run('blob', { size: 4_000_000 }, {
    stdout: async (c) => {
      hash.update(c);
      await new Promise((r) => setImmediate(r));
    },
    update: (_k, v) => void (sha = String(v)),
  });
  const timer = setInterval(() => (maxUnacked = Math.max(maxUnacked, ((pair.agent as any).session?.unackedByteCount ?? 0))), 1);
  await cmd.result;
  clearInterval(timer);
  t.equal(hash.digest('hex'), sha, 'bytes arrive exactly');
  t.ok(maxUnacked > 0, 'the agent had data in flight');
  t.ok(maxUnacked <= 64 * 1024 + 8 * 1024, `agent's unacknowledged bytes stay within one window (max ${maxUnacked})`);
});

t.test('download data flows to the agent under credit', async (t) => {
  const pair = await startPair(commands, { hub: { window: 32 * 1024 } });
  t.teardown(() => pair.close());
  let received = 0;
  const cmd = pair.remote.run('download', {}, { update: (_k, v) => void (received = Number(v)) });
  const block = randomBytes(10_000);
  for (let i = 0; i < 100; i++) await cmd.writeFile(block);
  await cmd.endFile();
  await cmd.result;
  t.equal(received, 1_000_000);
});

t.test('failures and unknown commands complete with a reason', async (t) => {
  const pair = await startPair(commands);
  t.teardown(() => pair.close());
  const failed = await pair.remote.run('fail', {}, {}).result;
  t.match(failed.failure, { message: 'boom' });
  const unknown = await pair.remote.run('nope', {}, {}).result;
  t.match(unknown.failure, { code: 'UNKNOWN_COMMAND', message: /no command 'nope'/ });
});

t.test('a wrong secret is refused on both sides', async (t) => {
  const { TetherHub } = await import('../master-plugin/hub');
  const { Agent } = await import('../agent/agent');
  const { connect } = await import('../wire/transport');
  const hub = new TetherHub({ workers: { w1: 'right' } });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const logs: string[] = [];
  const agent = new Agent({
    name: 'w1', secret: 'wrong', basedir: '/tmp', commands, masterLabel: 'm',
    open: () => connect(address), log: (l) => logs.push(l), maxBackoffMs: 100,
  });
  const rejected = new Promise((r) => hub.once('rejected', (_p, e) => r(e)));
  const running = agent.run();
  const error = (await rejected) as Error;
  agent.stop();
  await running;
  await hub.close();
  t.match(error.message, /wrong secret/);
  t.ok(logs.some((l) => /AUTH_FAILED|wrong secret|failed authentication/.test(l)), logs.join('\n'));
  t.equal(hub.connected().length, 0);
});

t.test('the agent reconnects after the master drops it', async (t) => {
  const pair = await startPair(commands);
  t.teardown(() => pair.close());
  const first = pair.remote;
  first.disconnect('test: dropping the agent');
  await first.closed;
  const again = await pair.hub.waitForAgent('w1', 10_000);
  t.not(again, first, 'a new session');
  const result = await again.run('echo', { text: 'back' }, {}).result;
  t.same(result, { failure: null }, 'commands run on the new session');
});

t.test('the smallest max_frame (64): INFO and a big START go in fragments, output in 48-byte pieces', async (t) => {
  const fx = await startHub({ small: 'sesame' });
  const agent = startAgent(fx.port, 'small', 'sesame', { maxFrame: MIN_MAX_FRAME });
  t.teardown(async () => {
    await agent.stop();
    await fx.close();
  });
  const remote = (await fx.hub.waitForAgent('small', 5000)) as AgentConnection;
  t.equal(remote.session.maxBody, 64, 'max_frame 64 agreed');
  t.ok(Array.isArray(remote.info.commands), 'INFO (hundreds of bytes) arrived whole');
  const text = 'x'.repeat(1000);
  t.equal(await echo(remote, text), text, 'a 1000-character argument and its output');
});

t.test('a side that closes with ERROR sends the ACK it owes first, where the peer still reads it', async (t) => {
  const fx = await startHub({ raw: 'secret-1' });
  t.teardown(() => fx.close());
  const { peer, remote } = await rawAgent(fx, 'raw', 'secret-1');
  t.teardown(() => peer.destroy());
  // The hub closes the moment the header reaches the command: the ACK for it is still owed (ACK_DELAY_MS).
  const command = remote.run('x', {}, { header: () => (remote as AgentConnection).disconnect('closing with an ACK owed') });
  command.result.catch(() => undefined);
  await peer.waitFor((m) => m.type === MsgType.START, 5000, 'START');
  peer.sendSequenced({ type: MsgType.HEADER, stream: command.stream, text: 'the last thing the hub acts on\n' });
  const header = peer.sendSeq - 1;
  await peer.waitFor((m) => m.type === MsgType.ERROR, 5000, 'ERROR');
  const types = peer.received.map((m) => m.type);
  const ack = peer.received.findIndex((m) => m.type === MsgType.ACK && m.nextSeq > header);
  t.ok(ack >= 0 && ack < types.indexOf(MsgType.ERROR), `the ACK of the header before the ERROR: ${peer.describe()}`);
});
