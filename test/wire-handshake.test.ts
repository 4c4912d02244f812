/**
 * The handshake under attack and misconfiguration, over real loopback
 * sockets: wrong secrets both ways, an impostor master, a replayed handshake,
 * messages before authentication, oversize frames, unknown workers (not told apart from a wrong secret), version
 * mismatches and timeouts. Each gets a clear error and a closed connection,
 * and the agent that is connected to the same hub all along keeps working.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { TetherError } from '../wire/errors';
import { FrameReader, encodeHandshakeFrame, handshakeBody } from '../wire/framing';
import { MAX_GRACE_SECONDS, MAX_KEEPALIVE_SECONDS, MAX_WINDOW, MIN_KEEPALIVE_SECONDS, MIN_MAX_FRAME, MIN_WINDOW, agentHandshake, masterHandshake, proof } from '../wire/handshake';
import { TetherHub } from '../master-plugin/hub';
import type { AgentConnection } from '../master-plugin/agent-connection';
import { Link } from '../wire/link';
import { type ChallengeParams, type HelloParams, type Message, MsgType, type OutgoingMessage, encodeChallengeParams, encodeMessage } from '../wire/messages';
import { type AgentFixture, Peer, echo, fakeMaster, masterSide, socketPair, startAgent, startHub, teeProxy } from './helpers/wire-net';
import { sleep, waitFor, withTimeout } from './helpers/support';

type Hello = Extract<Message, { type: typeof MsgType.HELLO }>;
type Challenge = Extract<Message, { type: typeof MsgType.CHALLENGE }>;

const SECRETS = { good: 'sesame', other: 'open-sesame' };

const is = (type: Message['type']) => (m: Message) => m.type === type;
const errorCode = (m: Message | undefined) => (m && m.type === MsgType.ERROR ? m.code : undefined);

function helloParams(over: Partial<HelloParams> = {}): HelloParams {
  return { versionMin: 2, versionMax: 2, name: 'other', nonce: randomBytes(32), caps: 0, maxFrame: 65536, ...over };
}

function challengeParams(over: Partial<ChallengeParams> = {}): ChallengeParams {
  return { version: 2, nonce: randomBytes(32), caps: 0, maxFrame: 65536, keepalive: 10, window: 262144, ...over };
}

/** A CHALLENGE answering `hello`, its proof made with `secret`. */
function challengeFor(hello: Hello, secret: string, over: Partial<ChallengeParams> = {}): OutgoingMessage {
  const paramsBytes = encodeChallengeParams(challengeParams(over));
  return { type: MsgType.CHALLENGE, paramsBytes, proof: proof(secret, 'master', hello.raw, paramsBytes) };
}

/** Runs an async handler for every connection of a fake master, ignoring its failures (the peer may vanish). */
function handler(fn: (peer: Peer) => Promise<void>): (peer: Peer) => void {
  return (peer) => void fn(peer).catch(() => undefined);
}

/** Stops an agent that talks to a fake master: stop first, then drop the sockets, then wait. */
async function stopAgainst(agent: AgentFixture, fake: { close(): Promise<void> }): Promise<void> {
  agent.agent.stop();
  await fake.close();
  await withTimeout(agent.stop(), 5000, 'the agent to stop');
}

t.test('handshake', async (t) => {
  const fx = await startHub(SECRETS);
  const good = startAgent(fx.port, 'good', SECRETS.good);
  t.teardown(async () => {
    await good.stop();
    await fx.close();
  });
  const remote = await fx.hub.waitForAgent('good', 5000);
  let round = 0;
  /** The agent connected all along still runs a command. */
  async function stillWorks(t: Test): Promise<void> {
    const text = `still here ${++round}`;
    t.equal(await echo(remote, text), text, 'the connected agent still runs a command');
    t.same(fx.hub.connected().map((a) => a.name).sort(), ['good'], 'only the legitimate agent is connected');
    t.equal(remote, fx.hub.connected()[0], 'on the same connection as before');
  }

  t.test('an agent with the wrong secret refuses the master, which refuses it', async (t) => {
    const rejection = fx.nextRejection(5000);
    const agent = startAgent(fx.port, 'other', 'not the secret');
    const error = await rejection;
    await agent.stop();
    t.equal(error.code, 'AUTH_FAILED', 'the hub reports AUTH_FAILED');
    t.match(agent.logs.join('\n'), /failed authentication/, 'the agent says the master failed authentication');
    await stillWorks(t);
  });

  t.test('a PROOF made with the wrong secret is refused with AUTH_FAILED', async (t) => {
    const rejection = fx.nextRejection(5000);
    const peer = await Peer.connect(fx.port);
    const hello = encodeMessage({ type: MsgType.HELLO, params: helloParams() });
    peer.link.sendHandshake(hello);
    const challenge = (await peer.waitFor(is(MsgType.CHALLENGE), 5000, 'CHALLENGE')) as Challenge;
    t.ok(challenge.proof.equals(proof(SECRETS.other, 'master', hello, challenge.paramsBytes)), 'the real master proves itself');
    peer.sendLink({ type: MsgType.PROOF, proof: proof('guessed', 'agent', hello, challenge.paramsBytes) });
    const error = await peer.waitFor(is(MsgType.ERROR), 5000, 'ERROR');
    t.equal(errorCode(error), 7, 'ERROR 7 AUTH_FAILED');
    await peer.waitClosed(5000);
    t.notOk(peer.received.some(is(MsgType.WELCOME)), 'no WELCOME');
    t.equal((await rejection).code, 'AUTH_FAILED');
    await stillWorks(t);
  });

  t.test('an impostor master that does not know the secret never gets a PROOF', async (t) => {
    const fake = await fakeMaster(
      handler(async (peer) => {
        const hello = (await peer.waitFor(is(MsgType.HELLO), 5000)) as Hello;
        peer.sendLink(challengeFor(hello, 'a guess'));
      }),
    );
    const agent = startAgent(fake.port, 'good', SECRETS.good);
    const first = await withTimeout(new Promise<Peer>((resolve) => {
      const poll = setInterval(() => fake.peers[0] && (clearInterval(poll), resolve(fake.peers[0])), 5);
    }), 5000, 'a connection');
    const error = await first.waitFor(is(MsgType.ERROR), 5000, 'ERROR from the agent');
    await first.waitClosed(5000, 'the agent to close');
    t.equal(errorCode(error), 7, 'the agent sends ERROR 7 AUTH_FAILED');
    t.same(first.received.map((m) => m.type), [MsgType.HELLO, MsgType.ERROR], 'HELLO, then ERROR: nothing else');
    await sleep(300); // let it retry a few times
    await stopAgainst(agent, fake);
    t.ok(fake.peers.length >= 1);
    t.notOk(fake.peers.some((p) => p.received.some(is(MsgType.PROOF))), `no PROOF on any of ${fake.peers.length} connections`);
    t.same(agent.ran, [], 'no command ran');
    t.match(agent.logs.join('\n'), /failed authentication/);
  });

  t.test("an impostor master replaying an earlier session's CHALLENGE is refused", async (t) => {
    let recorded: OutgoingMessage | null = null;
    const fake = await fakeMaster(
      handler(async (peer) => {
        const hello = (await peer.waitFor(is(MsgType.HELLO), 5000)) as Hello;
        // The first connection sees the real master's answer (made with the secret); later ones get it replayed.
        const genuine = recorded === null;
        recorded ??= challengeFor(hello, SECRETS.good);
        peer.sendLink(recorded);
        if (genuine) {
          await peer.waitFor(is(MsgType.PROOF), 5000);
          peer.destroy(); // that session ends; the agent reconnects
        }
      }),
    );
    const agent = startAgent(fake.port, 'good', SECRETS.good);
    await withTimeout(new Promise<void>((resolve) => {
      const poll = setInterval(() => fake.peers.length >= 2 && fake.peers[1].received.some(is(MsgType.ERROR)) && (clearInterval(poll), resolve()), 5);
    }), 5000, 'a second connection');
    await stopAgainst(agent, fake);
    t.ok(fake.peers[0].received.some(is(MsgType.PROOF)), 'the genuine CHALLENGE gets a PROOF');
    const replayed = fake.peers[1];
    t.equal(errorCode(replayed.received.find(is(MsgType.ERROR))), 7, 'the replayed one gets ERROR 7 AUTH_FAILED');
    t.notOk(replayed.received.some(is(MsgType.PROOF)), 'and no PROOF');
  });

  t.test("a replayed agent handshake is refused: the master's nonce differs", async (t) => {
    const proxy = await teeProxy(fx.port);
    const other = startAgent(proxy.port, 'other', SECRETS.other);
    const otherRemote = await fx.hub.waitForAgent('other', 5000);
    t.teardown(async () => {
      await other.stop();
      await proxy.close();
    });
    // The agent's first two frames on the wire: HELLO and PROOF, byte for byte.
    const upstream = Buffer.concat(proxy.upstream);
    const frames: Buffer[] = [];
    for (let at = 0; frames.length < 2; ) {
      const end = upstream.indexOf(0, at);
      frames.push(upstream.subarray(at, end + 1));
      at = end + 1;
    }
    const recorder = new FrameReader();
    const seen: number[] = [];
    recorder.on('frame', (frame: Buffer) => seen.push(handshakeBody(frame)![0]));
    recorder.feed(Buffer.concat(frames));
    t.same(seen, [MsgType.HELLO, MsgType.PROOF], 'recorded HELLO and PROOF');

    const rejection = fx.nextRejection(5000);
    const replay = await Peer.connect(fx.port);
    replay.write(frames[0]);
    const challenge = (await replay.waitFor(is(MsgType.CHALLENGE), 5000, 'CHALLENGE')) as Challenge;
    replay.write(frames[1]);
    const error = await replay.waitFor(is(MsgType.ERROR), 5000, 'ERROR');
    await replay.waitClosed(5000);
    t.equal(errorCode(error), 7, 'ERROR 7 AUTH_FAILED');
    t.notOk(replay.received.some(is(MsgType.WELCOME)), 'no WELCOME');
    t.equal((await rejection).code, 'AUTH_FAILED');
    t.equal(challenge.params.nonce.length, 32, 'a fresh master nonce');
    const rejection2 = fx.nextRejection(5000);
    const pipelined = await Peer.connect(fx.port);
    pipelined.write(Buffer.concat(frames));
    t.equal(errorCode(await pipelined.waitFor(is(MsgType.ERROR), 5000, 'ERROR')), 7, 'HELLO and PROOF replayed in one write: ERROR 7 too');
    await pipelined.waitClosed(5000);
    t.equal((await rejection2).code, 'AUTH_FAILED');
    t.equal(await echo(otherRemote, 'original'), 'original', 'the agent whose handshake was recorded is unaffected');
    t.equal(fx.hub.connected().find((a) => a.name === 'other'), otherRemote);
    await other.stop();
    await sleep(50);
    await stillWorks(t);
  });

  t.test('a sequenced frame before authentication: NOT_AUTHENTICATED, nothing runs', async (t) => {
    for (const first of [
      { type: MsgType.START, stream: 0, command: 'echo', args: { text: 'pwned' } },
      { type: MsgType.INFO, info: { os: 'x' } },
    ] as OutgoingMessage[]) {
      const rejection = fx.nextRejection(5000);
      const peer = await Peer.connect(fx.port);
      peer.sendSequenced(first);
      const error = await peer.waitFor(is(MsgType.ERROR), 5000, 'ERROR');
      await peer.waitClosed(5000);
      t.equal(errorCode(error), 8, `${String(first.type)} first: ERROR 8 NOT_AUTHENTICATED from the hub`);
      t.equal((await rejection).code, 'NOT_AUTHENTICATED');
    }
    t.notOk(good.ran.includes('echo:pwned'));
    await stillWorks(t);
  });

  t.test('a master that sends START instead of CHALLENGE: the agent closes, nothing runs', async (t) => {
    const fake = await fakeMaster(
      handler(async (peer) => {
        await peer.waitFor(is(MsgType.HELLO), 5000);
        peer.sendSequenced({ type: MsgType.START, stream: 0, command: 'echo', args: { text: 'pwned' } });
      }),
    );
    const agent = startAgent(fake.port, 'good', SECRETS.good);
    await withTimeout(new Promise<void>((resolve) => {
      const poll = setInterval(() => fake.peers[0]?.isClosed && (clearInterval(poll), resolve()), 5);
    }), 5000, 'the agent to close the connection');
    const first = fake.peers[0];
    await stopAgainst(agent, fake);
    t.same(agent.ran, [], 'no command ran');
    t.notOk(first.received.some(is(MsgType.PROOF)), 'no PROOF');
    t.match(agent.logs.join('\n'), /before authentication/, 'the agent logs why');
    t.equal(errorCode(first.received.find(is(MsgType.ERROR))), 8, 'the agent tells the master: ERROR 8 NOT_AUTHENTICATED');
  });

  t.test('an oversize frame in the handshake is dropped, never decoded; the reader resynchronises', async (t) => {
    const peer = await Peer.connect(fx.port);
    // A valid HELLO but 3000 bytes long: over the 1024-byte pre-handshake limit.
    peer.link.sendHandshake(encodeMessage({ type: MsgType.HELLO, params: helloParams({ name: 'x'.repeat(3000) }) }));
    await sleep(200);
    t.same(peer.received, [], 'no answer: not decoded (it would get ERROR AUTH_FAILED for that name)');
    t.notOk(peer.isClosed, 'the connection stays open');
    peer.sendLink({ type: MsgType.HELLO, params: helloParams() });
    await peer.waitFor(is(MsgType.CHALLENGE), 5000, 'CHALLENGE');
    t.pass('the next frame is read: CHALLENGE');
    peer.destroy();
    await stillWorks(t);
  });

  t.test('an oversize frame then silence: HANDSHAKE_TIMEOUT, ERROR 9, closed', async (t) => {
    const [client, server] = await socketPair();
    const peer = new Peer(client);
    const link = new Link(server);
    const handshake = masterHandshake(link, {
      secretFor: () => 'x',
      caps: 0,
      maxFrame: 65536,
      keepalive: 10,
      window: 65536,
      timeoutMs: 300,
      openSession: () => ({ session: randomBytes(16), resumed: false, nextSeq: 0 }),
    });
    peer.write(encodeHandshakeFrame(Buffer.alloc(5000, 0x01)));
    const error = await handshake.then(() => null, (e: TetherError) => e);
    t.equal(error?.code, 'HANDSHAKE_TIMEOUT');
    await peer.waitClosed(3000);
    t.equal(errorCode(peer.received.find(is(MsgType.ERROR))), 9, 'ERROR 9 HANDSHAKE_TIMEOUT, then closed');
    t.equal(link.stats.badFrames, 1, 'the oversize frame was counted');
    peer.destroy();
  });

  t.test('the agent side times out too', async (t) => {
    const [client, server] = await socketPair();
    const masterEnd = new Peer(server);
    const link = new Link(client);
    const handshake = agentHandshake(link, { name: 'good', secret: 'sesame', caps: 0, maxFrame: 65536, timeoutMs: 300 });
    await masterEnd.waitFor(is(MsgType.HELLO), 3000);
    masterEnd.write(encodeHandshakeFrame(Buffer.alloc(5000, 0x02))); // oversize: dropped
    const error = await handshake.then(() => null, (e: TetherError) => e);
    t.equal(error?.code, 'HANDSHAKE_TIMEOUT');
    t.equal(link.stats.badFrames, 1);
    link.close();
    masterEnd.destroy();
  });

  t.test('an unknown worker name is challenged like a known one and refused at PROOF: names cannot be probed', async (t) => {
    /** What a peer that does not know the secret sees for `name`: the message types, then the error. */
    const attempt = async (name: string) => {
      const rejection = fx.nextRejection(5000);
      const peer = await Peer.connect(fx.port);
      const hello = encodeMessage({ type: MsgType.HELLO, params: helloParams({ name }) });
      peer.link.sendHandshake(hello);
      const challenge = (await peer.waitFor(is(MsgType.CHALLENGE), 5000, 'CHALLENGE')) as Challenge;
      peer.sendLink({ type: MsgType.PROOF, proof: proof('guessed', 'agent', hello, challenge.paramsBytes) });
      const error = await peer.waitFor(is(MsgType.ERROR), 5000, 'ERROR');
      await peer.waitClosed(5000);
      t.equal((await rejection).code, 'AUTH_FAILED', `${name}: the hub reports AUTH_FAILED`);
      return {
        types: peer.received.map((m) => m.type),
        code: errorCode(error),
        message: (error as { message: string }).message.replace(`'${name}'`, 'NAME'),
        proofLength: challenge.proof.length,
      };
    };
    const known = await attempt('other');
    for (const name of ['nobody', '__proto__', 'constructor', 'hasOwnProperty', '']) {
      t.same(await attempt(name), known, `'${name}' gets what a known name with a wrong secret gets`);
    }
    t.equal(known.code, 7, 'ERROR 7 AUTH_FAILED');
    await stillWorks(t);
  });

  t.test('version mismatch: UNSUPPORTED_VERSION from the hub; an agent of version 1 is told to upgrade', async (t) => {
    for (const [min, max, says] of [[3, 5, /upgrade tether-master/], [0, 0, /upgrade tether-agent/], [1, 1, /every frame authenticated\): upgrade tether-agent/]] as const) {
      const rejection = fx.nextRejection(5000);
      const peer = await Peer.connect(fx.port);
      peer.sendLink({ type: MsgType.HELLO, params: helloParams({ versionMin: min, versionMax: max }) });
      const error = await peer.waitFor(is(MsgType.ERROR), 5000, 'ERROR');
      await peer.waitClosed(5000);
      t.equal(errorCode(error), 6, `versions ${min}-${max}: ERROR 6 UNSUPPORTED_VERSION`);
      t.match((error as { message: string }).message, says, `versions ${min}-${max}: the message says what to do`);
      t.equal((await rejection).code, 'UNSUPPORTED_VERSION');
    }
    const peer = await Peer.connect(fx.port);
    peer.sendLink({ type: MsgType.HELLO, params: helloParams({ versionMin: 1, versionMax: 7 }) });
    const challenge = (await peer.waitFor(is(MsgType.CHALLENGE), 5000)) as Challenge;
    t.equal(challenge.params.version, 2, 'an agent speaking 1-7 gets version 2');
    peer.destroy();
    await stillWorks(t);
  });

  t.test('a HELLO that breaks its CDDL rule (a max frame under 64, a short nonce, a window out of range): BAD_MESSAGE from the hub, no CHALLENGE', async (t) => {
    const cases: Array<[string, Partial<HelloParams>]> = [
      ['a max frame of 63', { maxFrame: MIN_MAX_FRAME - 1 }],
      ['a max frame of 0', { maxFrame: 0 }],
      ['an 8-byte nonce', { nonce: randomBytes(8) }],
      ['a window under 1024', { window: MIN_WINDOW - 1 }],
      ['a window of 2^40', { window: 2 ** 40 }],
    ];
    for (const [what, over] of cases) {
      const peer = await Peer.connect(fx.port);
      // This connection's rejection: one of an earlier test's connections may still be rejected meanwhile.
      const ours = () => fx.rejected.find((r) => r.peer === `${peer.socket.localAddress}:${peer.socket.localPort}`);
      try {
        peer.sendLink({ type: MsgType.HELLO, params: helloParams(over) });
        const error = await peer.waitFor(is(MsgType.ERROR), 5000, 'ERROR');
        await peer.waitClosed(5000);
        t.equal(errorCode(error), 4, `${what}: ERROR 4 BAD_MESSAGE`);
        t.notOk(peer.received.some(is(MsgType.CHALLENGE)), `${what}: no CHALLENGE (it would grant more than offered)`);
        await waitFor(`${what}: the hub's rejection`, () => ours() !== undefined, { timeoutMs: 5000, intervalMs: 5 });
        t.equal(ours()?.error.code, 'BAD_MESSAGE', `${what}: rejected as BAD_MESSAGE`);
      } finally {
        peer.destroy();
      }
    }
    await stillWorks(t);
  });

  t.test('parameters the agent did not offer, or beyond its bounds: UNSUPPORTED_VERSION from the agent, no PROOF', async (t) => {
    // The agent offers caps 7 and max frame 65552 (DEFAULT_MAX_FRAME); its ERROR names what and whom to upgrade.
    const cases: Array<[string, Partial<ChallengeParams>, RegExp]> = [
      ['version 3', { version: 3 }, /^the master chose protocol version 3; this agent speaks only 2: upgrade tether-agent$/],
      ['version 1', { version: 1 }, /^the master chose protocol version 1; this agent speaks only 2: upgrade the master$/],
      ['a capability not offered (bit 8)', { caps: 8 }, /^the master granted capability bits 8, which this agent did not offer \(it offered 7\): upgrade the master$/],
      ['a bigger max frame than offered', { maxFrame: 1 << 20 }, /^the master chose max frame 1048576, above the 65552 this agent offered: upgrade the master$/],
      ['a max frame under 64', { maxFrame: 32 }, /^the master chose max frame 32, below the least, 64: upgrade the master$/],
      ['a keepalive of 0', { keepalive: MIN_KEEPALIVE_SECONDS - 1 }, /^unusable parameters from the master: keepalive 0 s/],
      ['a keepalive over an hour', { keepalive: MAX_KEEPALIVE_SECONDS + 1 }, /^unusable parameters from the master: keepalive 3601 s/],
      ["a keepalive that overflows Node's timer", { keepalive: 2147484 }, /^unusable parameters from the master: keepalive 2147484 s/],
      ['a window under 1024', { window: MIN_WINDOW - 1 }, /window 1023 bytes/],
      ['a window over 16 MiB', { window: MAX_WINDOW + 1 }, /window 16777217 bytes/],
      ['a window of 2^40', { window: 2 ** 40 }, /window 1099511627776 bytes/],
    ];
    for (const [what, over, says] of cases) {
      const fake = await fakeMaster(
        handler(async (peer) => {
          const hello = (await peer.waitFor(is(MsgType.HELLO), 5000)) as Hello;
          peer.sendLink(challengeFor(hello, SECRETS.good, over)); // a real master, with the secret, misconfigured
        }),
      );
      const agent = startAgent(fake.port, 'good', SECRETS.good);
      try {
        await waitFor(`${what}: the agent to close`, () => fake.peers[0]?.isClosed, { timeoutMs: 5000, intervalMs: 5 });
      } finally {
        await stopAgainst(agent, fake);
      }
      const first = fake.peers[0];
      const error = first.received.find(is(MsgType.ERROR));
      t.equal(errorCode(error), 6, `${what}: ERROR 6 UNSUPPORTED_VERSION`);
      t.match((error as { message: string }).message, says, `${what}: the message says which parameter, and whom to upgrade`);
      t.notOk(first.received.some(is(MsgType.PROOF)), `${what}: no PROOF`);
    }
  });

  t.test('the largest keepalive and window are taken: the session starts', async (t) => {
    const fake = await fakeMaster(handler((peer) => masterSide(peer, SECRETS.good, { keepalive: MAX_KEEPALIVE_SECONDS, window: MAX_WINDOW }).then(() => undefined)));
    const agent = startAgent(fake.port, 'good', SECRETS.good);
    try {
      await waitFor('INFO from the agent', () => fake.peers[0]?.received.some(is(MsgType.INFO)), { timeoutMs: 5000, intervalMs: 5 });
    } finally {
      await stopAgainst(agent, fake);
    }
    const first = fake.peers[0];
    t.same(first.received.slice(0, 3).map((m) => m.type), [MsgType.HELLO, MsgType.PROOF, MsgType.INFO], 'HELLO, PROOF, then INFO: the agent took them');
  });

  t.test('an agent that asks for a window of 4096 (HELLO key 10) gets it; a master that grants more is refused', async (t) => {
    const small = startAgent(fx.port, 'other', SECRETS.other, { window: 4096 });
    try {
      const conn = (await fx.hub.waitForAgent('other', 5000)) as AgentConnection;
      t.equal(conn.window, 4096, 'the hub (window 262144) granted 4096');
      const text = 'y'.repeat(20_000);
      t.equal(await echo(conn, text), text, 'output of five windows flows, credit by credit');
    } finally {
      await small.stop();
    }
    await waitFor('the small agent to be gone', () => fx.hub.connected().length === 1, { timeoutMs: 5000, intervalMs: 5 });

    const fake = await fakeMaster(
      handler(async (peer) => {
        const hello = (await peer.waitFor(is(MsgType.HELLO), 5000)) as Hello;
        peer.sendLink(challengeFor(hello, SECRETS.good, { window: 262144 })); // a master of an earlier build: it ignores key 10
      }),
    );
    const agent = startAgent(fake.port, 'good', SECRETS.good, { window: 4096 });
    try {
      await waitFor('the agent to close', () => fake.peers[0]?.isClosed, { timeoutMs: 5000, intervalMs: 5 });
    } finally {
      await stopAgainst(agent, fake);
    }
    const first = fake.peers[0];
    t.equal((first.received[0] as Hello).params.window, 4096, 'HELLO carried key 10');
    const error = first.received.find(is(MsgType.ERROR));
    t.equal(errorCode(error), 6, 'ERROR 6 UNSUPPORTED_VERSION');
    t.match((error as { message: string }).message, /^the master chose window 262144, above the 4096 this agent asked for: upgrade the master$/);
    t.notOk(first.received.some(is(MsgType.PROOF)), 'no PROOF');
    await stillWorks(t);
  });

  t.test('a link message other than HELLO first: NOT_AUTHENTICATED; an ERROR first ends it', async (t) => {
    for (const first of [{ type: MsgType.PING, token: 1 }, { type: MsgType.PROOF, proof: randomBytes(32) }, { type: MsgType.ERROR, code: 15, message: 'bye' }] as OutgoingMessage[]) {
      const peer = await Peer.connect(fx.port);
      peer.sendLink(first);
      await peer.waitClosed(5000, `the hub to close after ${String(first.type)}`);
      const error = peer.received.find(is(MsgType.ERROR));
      if (first.type === MsgType.ERROR) t.notOk(error, 'ERROR first: closed, and the ERROR is not answered');
      else t.equal(errorCode(error), 8, `${String(first.type)} first: ERROR 8 NOT_AUTHENTICATED, then closed`);
    }
    await stillWorks(t);
  });

  t.test('sequenced frames in the same read as WELCOME', async (t) => {
    const cases = [
      { name: 'START after WELCOME', coalesced: false, text: 'hi', todo: undefined },
      {
        name: 'START in the same write as WELCOME',
        coalesced: true,
        text: 'hi',
        todo: undefined,
      },
      {
        name: 'a 2000-byte START in the same write as WELCOME',
        coalesced: true,
        text: 'x'.repeat(2000),
        todo: undefined,
      },
    ];
    for (const c of cases) {
      const fake = await fakeMaster(
        handler(async (peer) => {
          await masterSide(peer, SECRETS.good, {}, false);
          // Link frame 0, framed without being written, so that it can go in one write with the START.
          const welcome = peer.link.encodeSequenced(encodeMessage({ type: MsgType.WELCOME, session: randomBytes(16), resumed: false, nextSeq: 0 }), 0);
          const start = peer.link.encodeSequenced(encodeMessage({ type: MsgType.START, stream: 0, command: 'echo', args: { text: c.text } }), 0);
          if (c.coalesced) peer.write(Buffer.concat([welcome, start]));
          else {
            peer.write(welcome);
            await sleep(50);
            peer.write(start);
          }
          await sleep(100);
          peer.write(peer.link.encodeSequenced(encodeMessage({ type: MsgType.START, stream: 1, command: 'echo', args: { text: 'next' } }), 1));
        }),
      );
      const agent = startAgent(fake.port, 'good', SECRETS.good);
      await withTimeout(new Promise<void>((resolve) => {
        const poll = setInterval(() => fake.peers[0]?.received.some(is(MsgType.INFO)) && (clearInterval(poll), resolve()), 5);
      }), 5000, 'the session to start');
      await sleep(400);
      await stopAgainst(agent, fake);
      t.same(agent.ran, [`echo:${c.text}`, 'echo:next'], `${c.name}: both commands run`, c.todo ? { todo: c.todo } : {});
      t.comment(`${c.name}: ran ${JSON.stringify(agent.ran.map((r) => r.slice(0, 12)))}`);
    }
  });

  t.test('after all that, the hub and the agent are fine', async (t) => {
    await stillWorks(t);
    t.ok(fx.rejected.length >= 10, `${fx.rejected.length} connections were rejected`);
    t.ok(fx.rejected.every((r) => r.error instanceof TetherError), 'each with a TetherError');
  });
});

t.test("a hub built with a keepalive or window every agent would refuse: an error at once, not at each handshake", async (t) => {
  const workers = { w: 'a-secret-for-the-bounds-test' };
  for (const [what, over, says] of [
    ['keepalive over an hour', { keepalive: MAX_KEEPALIVE_SECONDS + 1 }, /^TetherHub: every agent would refuse keepalive 3601 s \(agents take 1 to 3600\)$/],
    ['keepalive under a second', { keepalive: 0.5 }, /every agent would refuse keepalive 0\.5 s/],
    ['window over 16 MiB', { window: MAX_WINDOW + 1 }, /^TetherHub: every agent would refuse window 16777217 bytes \(agents take 1024 to 16777216\)$/],
    ['window under 1024', { window: MIN_WINDOW - 1 }, /every agent would refuse window 1023 bytes/],
  ] as const) {
    t.throws(() => new TetherHub({ workers, ...over }), says, what);
  }
  // Not the handshake's, but as sure a failure: Node fires a timer set beyond 2^31 - 1 ms at once.
  t.throws(() => new TetherHub({ workers, grace: MAX_GRACE_SECONDS + 1 }), /^TetherHub: grace 86401 s is not from 0 to 86400$/, 'grace over a day');
  t.throws(() => new TetherHub({ workers, grace: -1 }), /grace -1 s/, 'grace below 0');
  const hub = new TetherHub({ workers, keepalive: MAX_KEEPALIVE_SECONDS, window: MAX_WINDOW, grace: MAX_GRACE_SECONDS });
  t.ok(hub, 'the largest of each is taken');
  await hub.close();
});
