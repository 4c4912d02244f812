/**
 * Authenticated agents that abuse the link, against a real hub over loopback
 * TCP: one floods PINGs and never reads, one never ACKs and sends frames that
 * each draw a REJECT, one sends such frames without end and does ACK. The
 * hub's queues for each stay under their stated bounds (PROTOCOL.md 7.8:
 * queue sizes are asserted, not memory), the abuser is dropped with its
 * reason, the hub stays up, and another agent runs commands all along. Last,
 * frames that fail authentication: the link closes without ERROR (PROTOCOL.md
 * 3.5), and the hub's log says why.
 */
import t, { type Test } from 'tap';
import type { AgentConnection } from '../master-plugin/agent-connection';
import { ErrorCodes } from '../wire/errors';
import { encodeAuthenticatedFrame } from '../wire/framing';
import { MsgType, encodeMessage } from '../wire/messages';
import { FAST_LINK_BUFFER, LINK_REPLY_BACKLOG, MAX_UNACKED_BYTES_RELIABLE, MAX_UNACKED_FRAMES, maxQueuedBytes } from '../wire/session';
import { Capability, DEFAULT_WINDOW } from '../wire/handshake';
import { FORGED_FRAME_BUDGET } from '../wire/link';
import { type HubFixture, Peer, echo, startAgent, startHub } from './helpers/wire-net';
import { sleep, waitFor, withTimeout } from './helpers/support';

interface Peak {
  unacked: number;
  queued: number;
  unsent: number;
}

/** Samples the hub's side of `name`'s session every few ms until stopped: the largest of each queue. */
function watch(fx: HubFixture, name: string): { peak: Peak; stop(): void } {
  const peak: Peak = { unacked: 0, queued: 0, unsent: 0 };
  const timer = setInterval(() => {
    const agent = fx.hub.connected().find((a) => a.name === name) as AgentConnection | undefined;
    if (!agent) return;
    const s = agent.session;
    peak.unacked = Math.max(peak.unacked, s.unackedByteCount);
    peak.queued = Math.max(peak.queued, s.queuedByteCount);
    peak.unsent = Math.max(peak.unsent, s.unsentByteCount);
  }, 2);
  return { peak, stop: () => clearInterval(timer) };
}

/**
 * A legitimate agent echoing all along. The abusers call served() between
 * their bursts: it waits for the other agent to finish one more command, so
 * "the hub serves others meanwhile" is checked at each burst, not by a count
 * that depends on how fast this machine is.
 */
function legitimateLoad(fx: HubFixture) {
  const legit = startAgent(fx.port, 'legit', 'good-secret');
  let echoes = 0;
  let served = 0;
  let stop = false;
  const running = (async () => {
    const remote = await fx.hub.waitForAgent('legit', 5000);
    while (!stop) {
      if ((await echo(remote, `n${echoes}`)) !== `n${echoes}`) throw new Error('wrong echo');
      echoes++;
      await sleep(5);
    }
  })();
  return {
    async served(): Promise<void> {
      const before = echoes;
      await waitFor('the other agent to run a command between two bursts of abuse', () => echoes > before, { timeoutMs: 10_000, intervalMs: 5 });
      served++;
    },
    async finish(t: Test, bursts: number) {
      stop = true;
      await running;
      t.ok(served >= bursts, `the other agent ran a command after each of ${served} bursts (${echoes} in all)`);
      const remote = await fx.hub.waitForAgent('legit', 5000);
      t.equal(await echo(remote, 'after'), 'after', 'and runs one after');
      await legit.stop();
    },
  };
}

/** The hostile agent, authenticated, and why the hub ends its session (once it does). */
async function hostile(fx: HubFixture): Promise<{ peer: Peer; closed: Promise<string> }> {
  const peer = await Peer.agent(fx.port, 'bad', 'bad-secret');
  peer.sendSequenced({ type: MsgType.INFO, info: { os: 'hostile' } });
  const conn = (await fx.hub.waitForAgent('bad', 5000)) as AgentConnection;
  const closed = new Promise<string>((resolve) => conn.session.once('close', (error: Error | null) => resolve(error?.message ?? 'closed')));
  return { peer, closed };
}

const workers = { legit: 'good-secret', bad: 'bad-secret' };

t.test('a peer that floods PINGs and never reads: replies held to one, dropped once it has read nothing for 3 keepalives', async (t) => {
  const logs: string[] = [];
  const fx = await startHub(workers, { keepalive: 1, log: (l) => logs.push(l) });
  t.teardown(() => fx.close());
  const load = legitimateLoad(fx);
  const { peer, closed } = await hostile(fx);
  const seen = watch(fx, 'bad');
  peer.socket.pause();
  // 20 MiB of PINGs (the flood was 22.9 MiB), a thousand frames per write.
  const start = peer.link.stats.bytesOut;
  for (let round = 0; peer.link.stats.bytesOut - start < 20 * 1024 * 1024 && !peer.isClosed; round++) {
    peer.socket.cork();
    for (let i = 0; i < 1000; i++) peer.sendLink({ type: MsgType.PING, token: (round * 1000 + i) % 0x10000 });
    peer.socket.uncork();
    if (round % 50 === 49) await load.served();
    else await sleep(1);
  }
  const sent = peer.link.stats.bytesOut - start;
  const reason = await withTimeout(closed, 15_000, 'the hub to drop the peer');
  seen.stop();
  t.match(reason, /has read nothing for 3 s/, `dropped: ${reason}`);
  t.ok(seen.peak.unsent <= LINK_REPLY_BACKLOG + 64, `the hub never held more than ${LINK_REPLY_BACKLOG} bytes of replies for it (peak ${seen.peak.unsent} of ${sent} bytes of PINGs)`);
  t.ok(seen.peak.queued <= maxQueuedBytes(DEFAULT_WINDOW), `queue peak ${seen.peak.queued}`);
  await load.finish(t, 5);
  peer.destroy();
});

t.test('a peer that never ACKs and sends frames that each draw a REJECT: unacknowledged and queued bytes stay bounded, then FLOW_CONTROL', async (t) => {
  const fx = await startHub(workers);
  t.teardown(() => fx.close());
  const load = legitimateLoad(fx);
  const { peer, closed } = await hostile(fx);
  const seen = watch(fx, 'bad');
  // INFO without its field: a sequenced frame that decodes to BAD_MESSAGE, answered with REJECT.
  const bad = Buffer.from([MsgType.INFO]);
  for (let i = 0; i < 200_000 && !peer.isClosed; i++) {
    peer.sendBody(bad);
    if (i % 2000 === 1999) await load.served();
  }
  const reason = await withTimeout(closed, 15_000, 'the hub to drop the peer');
  seen.stop();
  t.match(reason, /wait for the peer, which does not acknowledge them/, `dropped: ${reason}`);
  t.ok(seen.peak.unacked <= MAX_UNACKED_BYTES_RELIABLE, `unacknowledged bytes peak ${seen.peak.unacked} (bound ${MAX_UNACKED_BYTES_RELIABLE}, and ${MAX_UNACKED_FRAMES} frames)`);
  t.ok(seen.peak.queued <= maxQueuedBytes(DEFAULT_WINDOW), `queued bytes peak ${seen.peak.queued} (bound ${maxQueuedBytes(DEFAULT_WINDOW)})`);
  t.ok(seen.peak.unsent <= FAST_LINK_BUFFER + LINK_REPLY_BACKLOG, `unsent bytes peak ${seen.peak.unsent}`);
  t.ok(peer.received.some((m) => m.type === MsgType.ERROR && m.code === 11), 'it was told: ERROR 11 FLOW_CONTROL');
  await load.finish(t, 5);
  peer.destroy();
});

t.test('a peer that ACKs but sends REJECT-worthy frames without end: the hub answers each, holds nothing, stays up', async (t) => {
  const fx = await startHub(workers);
  t.teardown(() => fx.close());
  const load = legitimateLoad(fx);
  const { peer } = await hostile(fx);
  const seen = watch(fx, 'bad');
  const bad = Buffer.from([MsgType.INFO]);
  let sent = 0;
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 1000; i++) peer.sendBody(bad);
    sent += 1000;
    peer.ack();
    if (round % 10 === 9) await load.served();
    else await sleep(5);
  }
  await withTimeout(
    (async () => {
      while (peer.received.filter((m) => m.type === MsgType.REJECT).length < sent) {
        peer.ack();
        await sleep(10);
      }
    })(),
    15_000,
    'a REJECT for every frame',
  );
  peer.ack();
  await sleep(50);
  seen.stop();
  t.equal(peer.received.filter((m) => m.type === MsgType.REJECT).length, sent, `${sent} REJECTs`);
  t.notOk(peer.isClosed, 'the session goes on');
  const session = (fx.hub.connected().find((a) => a.name === 'bad') as AgentConnection).session;
  t.same([session.unackedByteCount, session.queuedByteCount], [0, 0], 'and the hub holds nothing for it');
  t.ok(seen.peak.unacked <= MAX_UNACKED_BYTES_RELIABLE && seen.peak.queued <= maxQueuedBytes(DEFAULT_WINDOW), `peaks: ${JSON.stringify(seen.peak)}`);
  await load.finish(t, 5);
  peer.destroy();
});

t.test('a worker has one authenticated connection waiting for its info at a time: the newest', async (t) => {
  const lines: string[] = [];
  const fx = await startHub({ evil: 'evil-secret-0123456789abcdef' }, { log: (line) => lines.push(line) });
  t.teardown(() => fx.close());
  const peers: Peer[] = [];
  for (let i = 0; i < 5; i++) peers.push(await Peer.agent(fx.port, 'evil', 'evil-secret-0123456789abcdef'));
  for (const [i, peer] of peers.slice(0, -1).entries()) {
    const error = await peer.waitFor((m) => m.type === MsgType.ERROR, 5000, `connection ${i}: an ERROR`);
    t.match(error, { code: ErrorCodes.DUPLICATE_WORKER }, `connection ${i}: DUPLICATE_WORKER once the next one authenticated`);
    await peer.waitClosed(5000, `connection ${i} to close`);
  }
  const last = peers[4];
  t.notOk(last.isClosed, 'the newest is open');
  last.sendSequenced({ type: MsgType.INFO, info: { os: 'raw' } });
  const remote = await fx.hub.waitForAgent('evil', 5000);
  t.equal(remote.name, 'evil', 'and becomes the worker once its info comes');
  t.match(lines.join('\n'), /worker 'evil' from 127\.0\.0\.1:\d+ closed before it sent its info \(DUPLICATE_WORKER: worker 'evil' authenticated again/, 'the hub logs why it closed them');
});

t.test('a peer whose frames fail authentication: after 4 the hub closes the link without ERROR, and its log says why', async (t) => {
  const logs: string[] = [];
  const fx = await startHub(workers, { log: (l) => logs.push(l) });
  t.teardown(() => fx.close());
  const cases = [
    { what: 'a connected agent', info: true, caps: Capability.SELECTIVE_REPEAT, line: /^worker 'bad' disconnected \(AUTH_FAILED: 4 frames failed authentication/ },
    { what: 'before INFO', info: false, caps: Capability.SELECTIVE_REPEAT, line: / closed before it sent its info \(AUTH_FAILED: 4 frames failed authentication/ },
    { what: 'a resumable session', info: true, caps: Capability.SELECTIVE_REPEAT | Capability.RESUME, line: /^worker 'bad' lost its link \(AUTH_FAILED: 4 frames failed authentication/ },
  ];
  for (const c of cases) {
    const peer = await Peer.agent(fx.port, 'bad', 'bad-secret', c.caps);
    t.teardown(() => peer.destroy());
    if (c.info) {
      peer.sendSequenced({ type: MsgType.INFO, info: { os: 'hostile' } });
      await fx.hub.waitForAgent('bad', 5000);
    }
    // What an attacker on the path can make: a right CRC, a wrong tag.
    const body = encodeMessage({ type: MsgType.CREDIT, stream: 0, bytes: 1 });
    for (let i = 0; i < FORGED_FRAME_BUDGET; i++) peer.write(encodeAuthenticatedFrame(body, peer.sendSeq + i, Buffer.alloc(8)));
    await peer.waitClosed(5000, `${c.what}: the hub to close the link`);
    t.notOk(peer.received.some((m) => m.type === MsgType.ERROR), `${c.what}: closed without ERROR`);
    await waitFor(`${c.what}: the hub to log why`, () => logs.some((l) => c.line.test(l)), { timeoutMs: 5000, intervalMs: 5 });
    t.pass(`${c.what}: logged ${c.line}`);
  }
});
