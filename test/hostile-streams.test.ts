/**
 * Hostile peers against one stream's queues, over real loopback sockets. What
 * a receiver holds for a consumer that does not take it is bounded in bytes
 * (PROTOCOL.md section 8.2): payload by credit, everything else by
 * MAX_HELD_OTHER. A peer past either bound is dropped with ERROR
 * FLOW_CONTROL; the hub stays up and another agent keeps running commands.
 * The tests assert the queue sizes, not the process's memory.
 */
import t from 'tap';
import type { AgentConnection } from '../master-plugin/agent-connection';
import type { HubOptions } from '../master-plugin/hub';
import type { CommandSink } from '../master-plugin/remote';
import { MAX_HELD_OTHER, MESSAGE_COST } from '../wire/credit';
import { errorName } from '../wire/errors';
import { type Message, MsgType } from '../wire/messages';
import { Peer, echo, rawAgent, rawMaster, startAgent, startHub } from './helpers/wire-net';
import { withTimeout } from './helpers/support';

/** A RemoteCommand of the hub, with the size of its queue for the sink. */
type Watched = ReturnType<AgentConnection['run']> & { readonly undeliveredBytes: number };

/**
 * A hub with two agents: 'good', a real one, and 'evil', raw frames, which
 * has been sent START for a command whose consumer is `sink`.
 */
async function hubWithHostileAgent(t: Tap.Test, sink: CommandSink, opts: Partial<HubOptions> = {}) {
  const fx = await startHub({ evil: 'secret-1', good: 'secret-2' }, opts);
  const good = startAgent(fx.port, 'good', 'secret-2');
  t.teardown(async () => {
    await good.stop();
    await fx.close();
  });
  const goodRemote = await fx.hub.waitForAgent('good', 5000);
  const { peer, remote } = await rawAgent(fx, 'evil', 'secret-1');
  t.teardown(() => peer.destroy());
  const job = remote.run('job', {}, sink) as Watched;
  await peer.waitFor((m) => m.type === MsgType.START, 5000, 'START');
  return { fx, goodRemote, peer, job };
}

let pings = 0;
/** Resolves once the other side has handled everything `peer` sent before (frames are handled in order). */
async function roundTrip(peer: Peer): Promise<void> {
  const token = ++pings;
  peer.sendLink({ type: MsgType.PING, token });
  await peer.waitFor((m) => m.type === MsgType.PONG && m.token === token, 5000, `PONG ${token}`);
}

function errorOf(peer: Peer): Extract<Message, { type: typeof MsgType.ERROR }> | undefined {
  return peer.received.find((m): m is Extract<Message, { type: typeof MsgType.ERROR }> => m.type === MsgType.ERROR);
}

const blocked = () => new Promise<void>(() => undefined);

t.test('a HEADER flood into a stream whose sink is blocked: held up to its byte bound, then FLOW_CONTROL; others unaffected', async (t) => {
  const { fx, goodRemote, peer, job } = await hubWithHostileAgent(t, { header: blocked });

  const text = 'h'.repeat(16 * 1024);
  const fits = Math.floor(MAX_HELD_OTHER / (text.length + MESSAGE_COST));
  for (let i = 0; i < fits; i++) peer.sendSequenced({ type: MsgType.HEADER, stream: job.stream, text });
  await roundTrip(peer);
  t.equal(job.undeliveredBytes, fits * (text.length + MESSAGE_COST), `${fits} HEADERs of 16 KiB are held, each with its ${MESSAGE_COST} bytes`);
  t.notOk(errorOf(peer), 'all within the bound');
  t.equal(await echo(goodRemote, 'during'), 'during', 'the other agent runs a command meanwhile');

  peer.sendSequenced({ type: MsgType.HEADER, stream: job.stream, text });
  await peer.waitClosed(5000, 'the hub to drop the flooding agent');
  const error = errorOf(peer);
  t.equal(error && errorName(error.code), 'FLOW_CONTROL');
  t.match(error?.message, new RegExp(`^stream ${job.stream}: more than ${MAX_HELD_OTHER} bytes of messages wait for the consumer`));
  t.ok(job.undeliveredBytes <= MAX_HELD_OTHER, `the refused HEADER was not kept: ${job.undeliveredBytes} bytes held`);

  t.equal(await echo(goodRemote, 'after'), 'after', 'the hub is up and the other agent keeps running commands');
  t.same(fx.hub.connected().map((a) => a.name), ['good']);
});

t.test('credit: a whole window and one more in 4-byte messages is held in bytes; a byte beyond is FLOW_CONTROL; others unaffected', async (t) => {
  const window = 16 * 1024;
  const { goodRemote, peer, job } = await hubWithHostileAgent(t, { stdout: blocked }, { window });

  // The receiver tolerates a sender one window ahead of its credit: 2 × window in all.
  const chunk = Buffer.from('abcd');
  for (let sent = 0; sent < 2 * window; sent += chunk.length) peer.sendSequenced({ type: 'output', stream: job.stream, channel: 0, data: chunk });
  await roundTrip(peer);
  t.notOk(errorOf(peer), `${(2 * window) / chunk.length} messages within the credit are no error`);
  // The sink holds the first run; the rest joined into one (wire/byte-run.ts), so bookkeeping stays small.
  t.ok(job.undeliveredBytes >= 2 * window && job.undeliveredBytes <= 2 * window + 2 * MESSAGE_COST, `${job.undeliveredBytes} bytes held`);

  peer.sendSequenced({ type: 'output', stream: job.stream, channel: 0, data: Buffer.from('!') });
  await peer.waitClosed(5000, 'the hub to drop the agent that overran its credit');
  const error = errorOf(peer);
  t.equal(error && errorName(error.code), 'FLOW_CONTROL');
  t.match(error?.message, new RegExp(`^stream ${job.stream}: the peer sent more than its flow-control credit`));
  t.ok(job.undeliveredBytes <= 2 * window + 2 * MESSAGE_COST, 'the byte beyond was not kept');
  t.equal(await echo(goodRemote, 'after'), 'after', 'the other agent keeps running commands');
});

t.test('agent: a flood of tiny and empty DATA waits as a few runs of bytes, not a chunk each', async (t) => {
  const window = 16 * 1024;
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const peer = await rawMaster(t, window, {
    async slurp(_args, io) {
      await released;
      let reads = 0;
      let bytes = 0;
      for (let chunk = await io.readFile(); chunk; chunk = await io.readFile()) {
        reads++;
        bytes += chunk.length;
      }
      io.update('read', [reads, bytes]);
    },
  });
  peer.sendSequenced({ type: MsgType.START, stream: 0, command: 'slurp', args: {} });
  const one = Buffer.from('x');
  for (let i = 0; i < window; i++) {
    peer.sendSequenced({ type: MsgType.DATA, stream: 0, data: one });
    if (i % 8 === 0) peer.sendSequenced({ type: MsgType.DATA, stream: 0, data: Buffer.alloc(0) });
  }
  peer.sendSequenced({ type: MsgType.EOF, stream: 0, times: null });
  await roundTrip(peer);
  release();
  const read = (await peer.waitFor((m) => m.type === MsgType.UPDATE && m.key === 'read', 5000, 'the read count')) as Extract<Message, { type: typeof MsgType.UPDATE }>;
  const [reads, bytes] = read.value as [number, number];
  t.equal(bytes, window, 'every byte arrives');
  t.ok(reads <= Math.ceil(window / 4096) + 1, `in ${reads} reads, not ${window + window / 8} chunks`);
  t.notOk(peer.received.some((m) => m.type === MsgType.REJECT || m.type === MsgType.ERROR), 'no REJECT, no ERROR');
});

t.test('agent: DATA and STDIN of one stream share its credit: 2 × window of DATA and one byte of STDIN is FLOW_CONTROL', async (t) => {
  const window = 16 * 1024;
  const peer = await rawMaster(t, window, { hold: () => new Promise<void>(() => undefined) });
  peer.sendSequenced({ type: MsgType.START, stream: 0, command: 'hold', args: {} });
  for (let sent = 0; sent < 2 * window; sent += 4096) peer.sendSequenced({ type: MsgType.DATA, stream: 0, data: Buffer.alloc(4096) });
  await roundTrip(peer);
  t.notOk(errorOf(peer), 'two windows of DATA are within what the agent tolerates');
  peer.sendSequenced({ type: MsgType.STDIN, stream: 0, data: Buffer.from('!') });
  await withTimeout(peer.waitFor((m) => m.type === MsgType.ERROR, 5000, 'ERROR'), 6000, 'ERROR');
  const error = errorOf(peer);
  t.equal(error && errorName(error.code), 'FLOW_CONTROL');
  t.match(error?.message, /^stream 0: the peer sent more than its flow-control credit/);
});
