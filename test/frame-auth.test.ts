/**
 * Every frame after the handshake is authenticated: an attacker on the path
 * (a relay that sees every frame, knows the protocol and the CRC, not the
 * keys) injects, replays, reorders and reflects frames between a real agent
 * and a real hub, over TCP and over a serial line. The injected command
 * never runs, nothing runs twice or out of order, and the honest session
 * goes on, or ends with a clear error and resumes.
 */
import t, { type Test } from 'tap';
import { encodeHandshakeFrame } from '../wire/framing';
import { MsgType, decodeMessage, encodeMessage } from '../wire/messages';
import { Agent } from '../agent/agent';
import { TetherHub } from '../master-plugin/hub';
import type { RemoteAgent } from '../master-plugin/remote';
import { type Direction, FrameRelay, type SeenFrame, bodyOf, forge, tcpRelay } from './helpers/frame-relay';
import { streamPair } from './helpers/line-sim';
import { echo, startAgent, startHub, testCommands } from './helpers/wire-net';
import { sleep, withTimeout } from './helpers/support';

const isStart = (frame: SeenFrame) => frame.raw.length > 14 && bodyOf(frame)[0] === MsgType.START;
const startText = (frame: SeenFrame) => {
  const m = decodeMessage(bodyOf(frame));
  return m.type === MsgType.START ? String(m.args.text) : '';
};
/** The body of a START like `frame`'s, running `text` instead. */
function startWith(frame: SeenFrame, text: string): Buffer {
  const m = decodeMessage(bodyOf(frame));
  if (m.type !== MsgType.START) throw new Error('not a START');
  return encodeMessage({ ...m, args: { text } });
}

/** Waits until the relay has seen a frame matching `match` in `direction`. */
async function seen(relay: FrameRelay, direction: Direction, match: (f: SeenFrame) => boolean, what: string): Promise<SeenFrame> {
  return withTimeout(
    (async () => {
      for (;;) {
        const found = relay.seen[direction].find(match);
        if (found) return found;
        await sleep(5);
      }
    })(),
    5000,
    what,
  );
}

interface Scene {
  relay: () => FrameRelay;
  remote: RemoteAgent;
  ran: string[];
  agentLogs: string[];
  hubLogs: string[];
}

/** The attacks, the same over every transport. */
function attacks(t: Test, setup: () => Promise<Scene & { close(): Promise<void> }>): void {
  t.test('a forged START (a real frame with its body changed, CRC made right) is dropped; nothing runs', async (t) => {
    const s = await setup();
    t.teardown(s.close);
    s.relay().rule('toAgent', (frame) => (isStart(frame) && startText(frame) === 'legit' ? [frame.wire, forge(startWith(frame, 'pwned'), frame)] : undefined));
    t.equal(await echo(s.remote, 'legit'), 'legit');
    t.equal(await echo(s.remote, 'after'), 'after', 'the session goes on');
    t.same(s.ran, ['echo:legit', 'echo:after'], 'the forged command never ran');
    t.match(s.agentLogs.join('\n'), /failed authentication \(forged, replayed or reflected on the way\): dropped/, 'the agent says so');
  });

  t.test('a START in a handshake frame (a CRC, no tag) is noise: nothing runs', async (t) => {
    const s = await setup();
    t.teardown(s.close);
    await echo(s.remote, 'first');
    const start = encodeMessage({ type: MsgType.START, stream: 99, command: 'echo', args: { text: 'pwned' } });
    s.relay().inject('toAgent', encodeHandshakeFrame(start));
    t.equal(await echo(s.remote, 'after'), 'after');
    t.same(s.ran, ['echo:first', 'echo:after']);
  });

  t.test('a genuine START replayed runs once', async (t) => {
    const s = await setup();
    t.teardown(s.close);
    await echo(s.remote, 'once');
    const start = await seen(s.relay(), 'toAgent', (f) => isStart(f) && startText(f) === 'once', 'the START');
    for (let i = 0; i < 3; i++) s.relay().inject('toAgent', start.wire);
    t.equal(await echo(s.remote, 'after'), 'after');
    t.same(s.ran, ['echo:once', 'echo:after'], 'not again');
  });

  t.test("the agent's own frames reflected back to it are forged; a link frame replayed to the hub too", async (t) => {
    const s = await setup();
    t.teardown(s.close);
    await echo(s.remote, 'first');
    const output = await seen(s.relay(), 'toMaster', (f) => f.raw.length > 14 && bodyOf(f)[0] >= 0x20 && bodyOf(f)[0] <= 0x37, 'output');
    s.relay().inject('toAgent', output.wire);
    const ack = await seen(s.relay(), 'toMaster', (f) => f.raw.length > 14 && bodyOf(f)[0] === MsgType.ACK, "the agent's ACK");
    s.relay().inject('toMaster', ack.wire);
    t.equal(await echo(s.remote, 'after'), 'after', 'the session goes on');
    t.same(s.ran, ['echo:first', 'echo:after']);
    await sleep(50);
    t.match(s.agentLogs.join('\n'), /failed authentication/, 'the agent dropped the reflected frame');
    t.match(s.hubLogs.join('\n'), /failed authentication/, 'the hub dropped the replayed ACK');
  });

  t.test('two STARTs swapped on the way run once each, in order', async (t) => {
    const s = await setup();
    t.teardown(s.close);
    await echo(s.remote, 'first');
    let held: Buffer | null = null;
    s.relay().rule('toAgent', (frame) => {
      if (!isStart(frame)) return undefined;
      if (startText(frame) === 'one') {
        held = frame.wire;
        return 'drop';
      }
      if (startText(frame) === 'two' && held) {
        const first = held;
        held = null;
        return [frame.wire, first];
      }
      return undefined;
    });
    const order: string[] = [];
    const run = (text: string) => s.remote.run('echo', { text }, { stdout: () => void order.push(text) }).result;
    await withTimeout(Promise.all([run('one'), run('two')]), 10_000, 'both commands');
    t.same(s.ran.slice(1), ['echo:one', 'echo:two'], 'in the order sent, once each');
    t.equal(await echo(s.remote, 'after'), 'after');
  });

  t.test('past the budget of forged frames the connection closes; the session resumes on a new one, with new keys', async (t) => {
    const s = await setup();
    t.teardown(s.close);
    await echo(s.remote, 'first');
    const start = await seen(s.relay(), 'toAgent', isStart, 'a START');
    const first = s.relay();
    for (let i = 0; i < 4; i++) first.inject('toAgent', forge(startWith(start, `pwned ${i}`), start));
    await withTimeout(
      (async () => {
        while (!s.agentLogs.some((l) => /4 frames failed authentication/.test(l))) await sleep(10);
      })(),
      5000,
      'the agent to close the link',
    );
    t.equal(await echo(s.remote, 'after'), 'after', 'the same session goes on, over a new link');
    t.not(s.relay(), first, 'a new connection');
    t.notOk(s.ran.some((r) => r.includes('pwned')), 'nothing forged ran');
    t.match(s.agentLogs.join('\n'), /resumed the session/);
  });
}

t.test('over TCP', async (t) => {
  attacks(t, async () => {
    const hubLogs: string[] = [];
    const fx = await startHub({ w: 'sesame' }, { log: (line) => hubLogs.push(line) });
    const relay = await tcpRelay(fx.port);
    const agent = startAgent(relay.port, 'w', 'sesame');
    const remote = await fx.hub.waitForAgent('w', 5000);
    return {
      relay: () => relay.relays[relay.relays.length - 1],
      remote,
      ran: agent.ran,
      agentLogs: agent.logs,
      hubLogs,
      async close() {
        await agent.stop();
        await relay.close();
        await fx.close();
      },
    };
  });
});

t.test('over a serial line', async (t) => {
  attacks(t, async () => {
    const hubLogs: string[] = [];
    const hub = new TetherHub({ workers: { w: 'sesame' }, keepalive: 2, log: (line) => hubLogs.push(line) });
    const relays: FrameRelay[] = [];
    const ran: string[] = [];
    const agentLogs: string[] = [];
    const line = { lossy: true, bytesPerSecond: 11_520 };
    // Each connection of the agent is a new pair of lines with the relay between them, as a
    // cable with a tap on it would be.
    const agent = new Agent({
      name: 'w',
      secret: 'sesame',
      basedir: '/tmp',
      commands: testCommands(ran),
      masterLabel: 'serial relay',
      maxBackoffMs: 200,
      log: (l) => agentLogs.push(l),
      open: async () => {
        const [agentEnd, relayAgentSide] = streamPair();
        const [relayMasterSide, masterEnd] = streamPair();
        relays.push(new FrameRelay(relayAgentSide, relayMasterSide));
        hub.accept(masterEnd, 'serial relay', { ...line, worker: 'w' });
        return { transport: agentEnd, ...line };
      },
    });
    const running = agent.run();
    const remote = await hub.waitForAgent('w', 5000);
    return {
      relay: () => relays[relays.length - 1],
      remote,
      ran,
      agentLogs,
      hubLogs,
      async close() {
        agent.stop();
        await running;
        await hub.close();
      },
    };
  });
});
