/**
 * Seeded fuzzing, bounded in count: the decoder and the framing path may
 * only ever throw TetherError; a Session survives hostile bodies; and a real
 * hub fed random bytes and mutated handshakes over real sockets neither
 * crashes nor keeps those connections, while a legitimate agent connected at
 * the same time keeps running commands.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { buildVectors } from '../firmware-notes/make-vectors';
import { TetherError } from '../wire/errors';
import { FrameAuth, deriveKeys, nearestNumber } from '../wire/frame-auth';
import { FrameReader, authenticatedParts, encodeAuthenticatedFrame, encodeHandshakeFrame, handshakeBody, isSequencedBody } from '../wire/framing';
import { proof } from '../wire/handshake';
import { Link } from '../wire/link';
import { type Message, MsgType, decodeMessage, encodeMessage } from '../wire/messages';
import { Session } from '../wire/session';
import { Peer, Rng, TEST_KEYS, echo, mutate, randomCborish, socketPair, startAgent, startHub } from './helpers/wire-net';
import { sleep, withTimeout } from './helpers/support';

const vectors = buildVectors().vectors;
const bodies = vectors.map((v) => Buffer.from(v.body, 'hex'));
const frames = vectors.map((v) => Buffer.from(v.hex, 'hex'));

interface Tally {
  accepted: number;
  refused: Record<string, number>;
  /** Anything thrown that is not a TetherError: must stay empty. */
  escaped: string[];
  slowestMs: number;
}

function tally(): Tally {
  return { accepted: 0, refused: {}, escaped: [], slowestMs: 0 };
}

function tryDecode(body: Buffer, into: Tally): Message | null {
  const started = performance.now();
  try {
    const m = decodeMessage(body);
    into.accepted++;
    return m;
  } catch (error) {
    if (error instanceof TetherError) into.refused[error.code] = (into.refused[error.code] ?? 0) + 1;
    else if (into.escaped.length < 10) into.escaped.push(`${body.toString('hex').slice(0, 80)}: ${String(error)}`);
    return null;
  } finally {
    into.slowestMs = Math.max(into.slowestMs, performance.now() - started);
  }
}

function report(t: Test, what: string, r: Tally): void {
  t.same(r.escaped, [], `${what}: nothing but TetherError escapes`);
  t.same(Object.keys(r.refused).filter((c) => c !== 'BAD_MESSAGE' && c !== 'UNKNOWN_MESSAGE'), [], `${what}: refusals are BAD_MESSAGE or UNKNOWN_MESSAGE`);
  t.comment(`${what}: ${r.accepted} accepted, refused ${JSON.stringify(r.refused)}, slowest ${r.slowestMs.toFixed(2)} ms`);
}

t.test('decodeMessage: 20 000 random bodies', async (t) => {
  const rng = new Rng(0x7e7e);
  const r = tally();
  for (let i = 0; i < 20_000; i++) {
    const body = i % 2 ? rng.bytes(1 + rng.int(64)) : randomCborish(rng);
    tryDecode(body, r);
  }
  report(t, 'random bodies', r);
});

t.test('decodeMessage: 20 000 mutations of the vectors', async (t) => {
  const rng = new Rng(0xbeef);
  const r = tally();
  for (let i = 0; i < 20_000; i++) tryDecode(mutate(rng, rng.pick(bodies)), r);
  report(t, 'mutated vectors', r);
  t.ok(r.accepted > 1000 && Object.keys(r.refused).length > 0, 'the mutations reach both outcomes');
});

/** The keys the vectors are tagged with (those of the handshake vectors). */
const h = buildVectors().handshake as { agentNonce: string; masterNonce: string; secret: string };
const vectorKeys = deriveKeys(Buffer.from(h.secret), Buffer.from(h.agentNonce, 'hex'), Buffer.from(h.masterNonce, 'hex'));
const receivers = [new FrameAuth(vectorKeys, 'master'), new FrameAuth(vectorKeys, 'agent')];

/** A frame's body if it passes its checks as a receiver of either side would make them (sequence numbers near `expected`), else null. */
function checkFrame(frame: Buffer, expected: number): Buffer | null {
  const parts = authenticatedParts(frame);
  if (!parts) return handshakeBody(frame);
  const number = isSequencedBody(parts.body) ? nearestNumber(parts.low, expected) : parts.low;
  return receivers.some((auth) => auth.verify(number, parts.body, parts.tag)) ? parts.body : null;
}

t.test('FrameReader, CRC and tag checks, decodeMessage on random and mutated streams', async (t) => {
  const rng = new Rng(0xf00d);
  const r = tally();
  // body || CRC of every vector: a mutated wire frame may still hold one intact.
  const originals = new Set(
    frames.map((f) => {
      const reader = new FrameReader(1024);
      let raw = '';
      reader.on('frame', (x: Buffer) => (raw = x.toString('hex')));
      reader.feed(f);
      return raw;
    }),
  );
  let phase: 'noise' | 'unfixed' | 'fixed' = 'noise';
  let lucky = 0;
  let decoded = 0;
  const reader = new FrameReader(1024);
  reader.on('frame', (frame: Buffer) => {
    const body = checkFrame(frame, rng.int(4));
    if (!body) return;
    if (phase !== 'fixed' && !originals.has(frame.toString('hex'))) lucky++;
    decoded++;
    tryDecode(body, r);
  });
  let feedErrors = 0;
  const feed = (b: Buffer) => {
    try {
      reader.feed(b);
    } catch {
      feedErrors++;
    }
  };
  // Random bytes, 0x00 one time in 32.
  for (let i = 0; i < 2000; i++) {
    const b = rng.bytes(1 + rng.int(512));
    for (let k = 0; k < b.length; k++) if (rng.int(32) === 0) b[k] = 0;
    feed(b);
  }
  // Whole wire frames mutated, CRC left as it was ...
  phase = 'unfixed';
  for (let i = 0; i < 10_000; i++) feed(Buffer.concat([mutate(rng, rng.pick(frames)), Buffer.from([0])]));
  // ... and mutated bodies framed with a correct CRC and tag (these reach the decoder when the number matches).
  phase = 'fixed';
  const agentSide = new FrameAuth(vectorKeys, 'agent');
  for (let i = 0; i < 10_000; i++) {
    const body = mutate(rng, rng.pick(bodies));
    const number = rng.int(4);
    feed(i % 4 === 0 ? encodeHandshakeFrame(body) : encodeAuthenticatedFrame(body, number, agentSide.tag(number, body)));
  }
  t.equal(feedErrors, 0, 'feed never throws');
  const delimited = reader.stats.frames + reader.stats.malformed + reader.stats.oversize;
  t.ok(delimited > 20_000, `${delimited} frames delimited`);
  t.equal(lucky, 0, 'no corrupted frame passes its CRC and tag');
  t.ok(decoded > 2000, `${decoded} frames reached the decoder`);
  report(t, 'framed fuzz', r);
  t.comment(`reader stats ${JSON.stringify(reader.stats)}`);
});

t.test('a Session fed 5 000 hostile sequenced bodies keeps going and says REJECT', async (t) => {
  const [a, b] = await socketPair();
  const link = new Link(b, { maxBody: 65536 });
  link.authenticate(new FrameAuth(TEST_KEYS, 'master'), () => 0);
  const session = new Session(link, { maxBody: 65536, keepalive: 10 });
  const peer = new Peer(a);
  peer.authenticateAs('agent', 'sesame', Buffer.alloc(32, 1), Buffer.alloc(32, 2));
  peer.link.setMaxBody(65536);
  const rng = new Rng(0xcafe);
  let messages = 0;
  let rejected = 0;
  session.on('message', () => messages++);
  session.on('rejected', () => rejected++);
  let held = 0;
  const sequencedBodies = bodies.filter((body) => isSequencedBody(body));
  let sent = 0;
  for (let i = 0; i < 5000; i++) {
    const body = mutate(rng, rng.pick(sequencedBodies));
    if (!isSequencedBody(body)) continue; // link bodies could be ERROR or NAK: not what this test is about
    peer.sendBody(body);
    sent++;
    if (i % 500 === 0) await sleep(1);
  }
  peer.sendSequenced({ type: MsgType.PRINT, text: 'the end' });
  await withTimeout(
    (async () => {
      while (session.nextRecvSeq < sent + 1) await sleep(5);
    })(),
    10_000,
    'the session to read every frame',
  );
  // A FRAGMENT piece with more to come is held silently until the rest arrives (or something breaks it).
  held = sent + 1 - messages - rejected;
  t.equal(session.nextRecvSeq, sent + 1, `every frame was read: ${messages} messages, ${rejected} rejected, ${held} held as fragments`);
  t.ok(messages > 0 && rejected > 0, 'both outcomes');
  t.notOk(session.isClosed, 'the session is still open');
  t.same([session.stats.crcErrors, session.stats.forged], [0, 0], 'every frame passed its checks');
  await peer.waitFor((m) => m.type === MsgType.REJECT, 5000, 'a REJECT');
  const rejects = peer.received.filter((m) => m.type === MsgType.REJECT);
  // A body whose stream field still decodes is refused on that stream (PROTOCOL.md 8.4), any other on none.
  const named = rejects.filter((m) => m.type === MsgType.REJECT && m.stream !== null);
  t.ok(rejects.length > 0 && named.every((m) => m.type === MsgType.REJECT && m.code === 4), `${rejects.length} REJECTs, the ${named.length} naming a stream BAD_MESSAGE`);
  t.ok(peer.received.some((m) => m.type === MsgType.ACK), 'and ACKs');
  session.close();
  peer.destroy();
});

/**
 * A mutated PROOF that no longer proves: items appended to a message are
 * extra fields a receiver ignores (PROTOCOL.md 4), so one mutation in about
 * 17 leaves the genuine proof intact, and the hub rightly lets that peer in.
 */
function brokenProof(rng: Rng, genuine: Buffer): Buffer {
  const good = encodeMessage({ type: MsgType.PROOF, proof: genuine });
  for (let tries = 0; tries < 100; tries++) {
    const body = mutate(rng, good);
    let decoded: Message | undefined;
    try {
      decoded = decodeMessage(body);
    } catch {
      // not a message any more: broken
    }
    if (!(decoded?.type === MsgType.PROOF && decoded.proof.equals(genuine))) return body;
  }
  throw new Error('100 mutations of a PROOF all kept the proof');
}

t.test('a hub under fuzz: never crashes, closes the bad connections, serves the good agent', async (t) => {
  const fx = await startHub({ legit: 'secret-1', fuzz: 'secret-2' });
  const legit = startAgent(fx.port, 'legit', 'secret-1');
  t.teardown(async () => {
    await legit.stop();
    await fx.close();
  });
  const remote = await fx.hub.waitForAgent('legit', 5000);
  const rng = new Rng(0x5eed);
  const helloFor = (name: string) =>
    encodeMessage({ type: MsgType.HELLO, params: { versionMin: 2, versionMax: 2, name, nonce: randomBytes(32), caps: 0, maxFrame: 65536 } });

  // A legitimate agent keeps working all along.
  let echoes = 0;
  let stopEchoes = false;
  const echoing = (async () => {
    while (!stopEchoes) {
      const text = `ping ${echoes}`;
      if ((await echo(remote, text)) !== text) throw new Error('wrong echo');
      echoes++;
      await sleep(5);
    }
  })();

  // 1. Pure noise: nothing that passes a CRC, so the hub waits out its 10 s handshake timeout.
  const noisy: Peer[] = [];
  const noiseStarted = Date.now();
  for (let i = 0; i < 12; i++) {
    const peer = await Peer.connect(fx.port);
    noisy.push(peer);
    for (let k = 0; k < 4; k++) {
      const b = rng.bytes(256 + rng.int(2048));
      for (let j = 0; j < b.length; j++) if (rng.int(64) === 0) b[j] = 0;
      peer.write(b);
    }
  }

  // 2. Mutated handshakes: every connection ends in a frame with a valid CRC, so the hub answers at once.
  let handshakes = 0;
  let challenged = 0;
  const strategies = ['mutated hello', 'mutated proof', 'bad crc then mutated hello', 'noise then mutated hello', 'mutated link body'];
  for (let batch = 0; batch < 10; batch++) {
    await Promise.all(
      Array.from({ length: 15 }, async () => {
        const peer = await Peer.connect(fx.port);
        const strategy = rng.pick(strategies);
        let sentError = false;
        const sendBody = peer.sendBody.bind(peer);
        peer.sendBody = (body: Buffer) => {
          try {
            if (decodeMessage(body).type === MsgType.ERROR) sentError = true;
          } catch {
            // not a message: the hub answers ERROR 4 or 5
          }
          sendBody(body);
        };
        const hello = helloFor(rng.next() < 0.5 ? 'fuzz' : 'legit');
        switch (strategy) {
          case 'mutated hello':
            peer.sendBody(mutate(rng, hello));
            break;
          case 'mutated proof': {
            peer.link.sendHandshake(hello);
            const challenge = await peer.waitFor((m) => m.type === MsgType.CHALLENGE, 5000, 'CHALLENGE');
            if (challenge.type !== MsgType.CHALLENGE) break;
            peer.sendBody(brokenProof(rng, proof('secret-2', 'agent', hello, challenge.paramsBytes)));
            break;
          }
          case 'bad crc then mutated hello':
            peer.write(Buffer.concat([mutate(rng, frames[4]), Buffer.from([0])]));
            peer.sendBody(mutate(rng, hello));
            break;
          case 'noise then mutated hello':
            peer.write(Buffer.concat([rng.bytes(200), Buffer.from([0])]));
            peer.sendBody(mutate(rng, hello));
            break;
          default:
            peer.sendBody(mutate(rng, rng.pick(bodies.filter((b) => !isSequencedBody(b)))));
        }
        // A mutated HELLO may still be a valid one: answer its CHALLENGE with a random PROOF.
        const deadline = Date.now() + 5000;
        while (!peer.isClosed && Date.now() < deadline) {
          if (strategy !== 'mutated proof' && peer.received.some((m) => m.type === MsgType.CHALLENGE) && !peer.received.some((m) => m.type === MsgType.PONG)) {
            challenged++;
            peer.sendLink({ type: MsgType.PROOF, proof: randomBytes(32) });
            peer.received.push({ type: MsgType.PONG, token: -1 }); // marker: answered once
          }
          await sleep(5);
        }
        t.ok(peer.isClosed, `${strategy}: closed by the hub`);
        if (!sentError) t.ok(peer.received.some((m) => m.type === MsgType.ERROR), `${strategy}: with an ERROR`);
        else t.notOk(peer.received.some((m) => m.type === MsgType.ERROR), `${strategy}: an ERROR sent is not answered`);
        handshakes++;
        peer.destroy();
      }),
    );
  }
  t.equal(handshakes, 150, '150 mutated handshakes');
  t.comment(`${challenged} mutated HELLOs were still valid enough to be challenged`);

  // 3. An authenticated peer that sends hostile session bodies.
  const peer = await Peer.agent(fx.port, 'fuzz', 'secret-2', 0);
  peer.sendSequenced({ type: MsgType.INFO, info: { os: 'fuzz' } });
  const fuzzRemote = await fx.hub.waitForAgent('fuzz', 5000);
  const sinkCalls = { n: 0 };
  const count = () => void sinkCalls.n++;
  const job = fuzzRemote.run('job', {}, { stdout: count, stderr: count, log: count, header: count, update: count, fileData: count, fileClose: count });
  job.result.catch(() => undefined);
  await peer.waitFor((m) => m.type === MsgType.START, 5000, 'START');
  const sessionBodies = bodies.filter((b) => isSequencedBody(b));
  let sentSession = 0;
  for (let i = 0; i < 3000 && !peer.isClosed; i++) {
    const body = mutate(rng, rng.pick(sessionBodies));
    if (body[0] === MsgType.ERROR) continue; // an ERROR ends any session: tested elsewhere
    peer.sendBody(body);
    sentSession++;
    if (i % 50 === 0) {
      peer.ack();
      await sleep(1);
    }
  }
  await sleep(200);
  const closedWith = peer.received.find((m) => m.type === MsgType.ERROR);
  t.comment(
    `authenticated fuzz: ${sentSession} bodies sent, ${peer.received.filter((m) => m.type === MsgType.REJECT).length} REJECTs back, ` +
      `${sinkCalls.n} sink calls, session ${peer.isClosed ? `closed (${closedWith && closedWith.type === MsgType.ERROR ? closedWith.message : 'no ERROR'})` : 'still open'}`,
  );
  t.ok(!peer.isClosed || closedWith, 'the fuzzing session is open, or was closed with an ERROR');
  peer.destroy();

  // 4. The noise connections are closed by the hub's handshake timeout.
  await withTimeout(Promise.all(noisy.map((p) => p.closed)), 15_000 - (Date.now() - noiseStarted), 'the noise connections to be closed');
  t.ok(noisy.every((p) => p.isClosed), 'every noise connection was closed by the hub');
  t.ok(noisy.every((p) => p.received.some((m) => m.type === MsgType.ERROR && m.code === 9)), 'each with ERROR 9 HANDSHAKE_TIMEOUT');
  t.comment(`noise connections closed ${Date.now() - noiseStarted} ms after they started`);

  stopEchoes = true;
  await echoing;
  t.ok(echoes > 10, `the legitimate agent ran ${echoes} commands during the fuzz`);
  t.equal(await echo(remote, 'after'), 'after', 'and still runs one afterwards');
  t.same(fx.hub.connected().map((a) => a.name).filter((n) => n === 'legit'), ['legit'], 'it is still connected');
  t.ok(fx.rejected.length >= 150 + noisy.length, `${fx.rejected.length} connections rejected, each with a TetherError`);
  t.ok(fx.rejected.every((r) => r.error instanceof TetherError));
});

t.test('an authenticated master cannot crash the agent with a misdirected message', async (t) => {
  const probe = join(__dirname, 'helpers', 'wire-agent-probe.ts');
  const execArgv = process.execArgv.filter((a) => a.includes('@tapjs/typescript') || a === '--enable-source-maps');
  const expected: Record<string, RegExp> = {
    update: /"REJECT 4 stream 0"/, // UPDATE is for the master: REJECT BAD_MESSAGE, the session goes on
    overrun: /"ERROR 11"/, // DATA beyond the credit: ERROR FLOW_CONTROL, the session ends
  };
  for (const mode of ['update', 'overrun']) {
    const run = spawnSync(process.execPath, [...execArgv, probe], {
      env: { ...process.env, TETHER_WIRE_PROBE: mode },
      encoding: 'utf8',
      timeout: 30_000,
    });
    const stdout = run.stdout?.trim() ?? '';
    t.equal(run.status, 0, `${mode}: the agent process survives`);
    t.match(stdout, expected[mode], `${mode}: the master is told why`);
    t.comment(`${mode}: exit ${run.status}, ${stdout} ${run.status ? (run.stderr ?? '').split('\n').slice(0, 3).join(' ') : ''}`);
  }
});
