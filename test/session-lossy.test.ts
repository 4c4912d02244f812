/**
 * The session on a lossy link: corrupted and dropped bytes are caught by the
 * CRC and the lost frames sent again (go-back-N with NAK and timeout), so the
 * receiver gets every message exactly once, in order. Also the send queue
 * (output merges while the link is busy) and deflate compression.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { FrameReader, checkFrame, encodeFrame } from '../wire/framing';
import { Link } from '../wire/link';
import { type Message, MsgType, decodeMessage, encodeMessage } from '../wire/messages';
import { Session } from '../wire/session';
import { waitFor } from './helpers/buildbot';
import { memoryLine } from './helpers/line-sim';

// Sessions unref their timers (a socket keeps a real process alive); in-memory pipes do not.
const alive = setInterval(() => undefined, 1000);
t.teardown(() => clearInterval(alive));

/** Two sessions over a simulated line (in memory) of `bytesPerSecond`, with seeded noise; the sessions know the rate. */
function sessions(o: { seed: number; bitErrorRate?: number; dropRate?: number; deflate?: boolean; maxBody?: number; bytesPerSecond?: number }) {
  const bytesPerSecond = o.bytesPerSecond ?? 1_000_000;
  const { a, b, sim } = memoryLine({ bytesPerSecond, noise: { seed: o.seed, bitErrorRate: o.bitErrorRate, dropRate: o.dropRate } });
  const maxBody = o.maxBody ?? 512;
  const options = { maxBody, keepalive: 30, deflate: o.deflate };
  const linkA = new Link(a, { lossy: true, bytesPerSecond, maxBody });
  const linkB = new Link(b, { lossy: true, bytesPerSecond, maxBody });
  const sender = new Session(linkA, options);
  const receiver = new Session(linkB, options);
  const close = () => {
    sender.close();
    receiver.close();
    sim.close();
  };
  return { sender, receiver, linkA, linkB, stats: sim.stats.ab, close };
}

function collect(receiver: Session, until: (bytes: number) => boolean): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  return new Promise((resolve) => {
    receiver.on('message', (m: Message) => {
      if (m.type !== 'output') return;
      chunks.push(m.data);
      total += m.data.length;
      if (until(total)) resolve(Buffer.concat(chunks));
    });
  });
}

t.test('every byte arrives once, in order, through bit flips and dropped bytes', async (t) => {
  // The noise of the serial issue's test: a bit-error rate of 1e-5 and 0.1 % of bytes dropped.
  const { sender, receiver, linkB, stats, close } = sessions({ seed: 7, bitErrorRate: 1e-5, dropRate: 1e-3, maxBody: 256 });
  t.teardown(close);
  const data = randomBytes(100_000);
  const got = collect(receiver, (n) => n >= data.length);
  for (let at = 0; at < data.length; at += 200) {
    sender.send({ type: 'output', stream: 1, channel: 0, data: data.subarray(at, at + 200) });
  }
  const received = await got;
  t.ok(received.equals(data), 'byte-exact');
  t.ok(stats.flipped > 0 && stats.dropped > 0, `noise was injected (${stats.flipped} flips, ${stats.dropped} drops)`);
  t.ok(linkB.stats.crcErrors + linkB.stats.badFrames > 0, `corrupt frames were caught (${linkB.stats.crcErrors} CRC, ${linkB.stats.badFrames} bad)`);
});

t.test('control messages and output keep their order through noise', async (t) => {
  const { sender, receiver, close } = sessions({ seed: 11, bitErrorRate: 1e-4, dropRate: 1e-3, maxBody: 256 });
  t.teardown(close);
  const seen: string[] = [];
  const done = new Promise<void>((resolve) =>
    receiver.on('message', (m: Message) => {
      if (m.type === MsgType.UPDATE) seen.push(`u${String(m.value)}`);
      if (m.type === 'output') seen.push(`o${m.data.toString()}`);
      if (m.type === MsgType.UPDATE && m.value === 499) resolve();
    }),
  );
  const expected: string[] = [];
  for (let i = 0; i < 500; i++) {
    sender.send({ type: MsgType.UPDATE, stream: 0, key: 'n', value: i });
    expected.push(`u${i}`);
  }
  await done;
  t.same(seen, expected);
});

t.test('output waiting behind a busy link merges into fewer frames', async (t) => {
  const { sender, receiver, linkA, close } = sessions({ seed: 1, bytesPerSecond: 10_000 });
  t.teardown(close);
  const got = collect(receiver, (n) => n >= 20_000);
  for (let i = 0; i < 2000; i++) sender.send({ type: 'output', stream: 0, channel: 0, data: Buffer.from('0123456789') });
  const received = await got;
  t.equal(received.toString(), '0123456789'.repeat(2000));
  t.ok(linkA.stats.framesOut < 200, `2000 writes went out in ${linkA.stats.framesOut} frames`);
});

t.test('deflate: text shrinks, random bytes are never sent bigger', async (t) => {
  for (const [kind, make] of [
    ['text', (i: number) => Buffer.from(`src/module${i % 17}.c:${i}: warning: unused variable 'x${i % 5}' [-Wunused]\n`)],
    ['random', () => randomBytes(80)],
  ] as const) {
    const plain = sessions({ seed: 3, maxBody: 1024, bytesPerSecond: 100_000 });
    const packed = sessions({ seed: 3, maxBody: 1024, bytesPerSecond: 100_000, deflate: true });
    const chunks = Array.from({ length: 1500 }, (_, i) => make(i));
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const sizes: number[] = [];
    for (const pair of [plain, packed]) {
      const got = collect(pair.receiver, (n) => n >= total);
      for (const data of chunks) pair.sender.send({ type: 'output', stream: 0, channel: 0, data });
      t.ok((await got).equals(Buffer.concat(chunks)), `${kind}: byte-exact`);
      sizes.push(pair.linkA.stats.bytesOut);
      pair.close();
    }
    if (kind === 'text') t.ok(sizes[1] * 3 < sizes[0], `text: ${sizes[0]} bytes raw, ${sizes[1]} compressed`);
    else t.ok(sizes[1] <= sizes[0], `random: ${sizes[0]} bytes raw, ${sizes[1]} with deflate on`);
  }
});

t.test('a message larger than a frame goes in fragments and arrives whole', async (t) => {
  const { sender, receiver, linkA, close } = sessions({ seed: 5, bitErrorRate: 1e-5, dropRate: 1e-3, maxBody: 256 });
  t.teardown(close);
  const args = { command: ['sh', '-c', 'x'.repeat(3000)], env: { A: 'b'.repeat(500) } };
  const got = new Promise<Message>((resolve) => receiver.on('message', resolve));
  sender.send({ type: MsgType.START, stream: 0, command: 'shell', args });
  const m = await got;
  t.same(m, { type: MsgType.START, stream: 0, command: 'shell', args });
  t.ok(linkA.stats.framesOut >= 14, `sent in ${linkA.stats.framesOut} frames of at most 256 bytes`);
});

/**
 * A session on a clean lossy link told it runs at `bytesPerSecond`; the test
 * plays the peer frame by frame on the other end and sees every frame the
 * session writes, with when it arrived.
 */
function sessionWithRawPeer(bytesPerSecond: number) {
  const { a, b, sim } = memoryLine({ bytesPerSecond });
  const link = new Link(a, { lossy: true, bytesPerSecond, maxBody: 512 });
  const session = new Session(link, { maxBody: 512, keepalive: 30 });
  const reader = new FrameReader(512);
  const frames: Array<{ frame: Buffer; at: number }> = [];
  reader.on('frame', (frame: Buffer) => frames.push({ frame, at: performance.now() }));
  b.on('data', (chunk: Buffer) => reader.feed(chunk));
  return {
    session,
    close: () => {
      session.close();
      sim.close();
    },
    /** The link messages (ACK, NAK, PING ...) the session sent, decoded. */
    linkMessages: () =>
      frames.flatMap(({ frame }) => {
        const check = checkFrame(frame, 0);
        return check.ok && !check.sequenced ? [decodeMessage(check.body)] : [];
      }),
    /** When each copy of the frame numbered `seq` arrived. */
    copiesOf: (seq: number) =>
      frames.filter(({ frame }) => {
        const check = checkFrame(frame, seq);
        return check.ok && check.sequenced;
      }).map((f) => f.at),
    write: (frame: Buffer) => b.write(frame),
  };
}

const outputBody = (text: string) => encodeMessage({ type: 'output', stream: 0, channel: 0, data: Buffer.from(text) });

t.test('a copy of a frame that already arrived is answered with an ACK, never a NAK', async (t) => {
  const peer = sessionWithRawPeer(10_000);
  t.teardown(peer.close);
  const delivered: Message[] = [];
  peer.session.on('message', (m: Message) => delivered.push(m));
  const frame = encodeFrame(outputBody('once'), 0);
  peer.write(frame);
  await waitFor('the ACK', () => peer.linkMessages().length > 0, { intervalMs: 5, timeoutMs: 5000 });
  t.same(peer.linkMessages(), [{ type: MsgType.ACK, nextSeq: 1 }]);

  peer.write(frame); // sent again, as by a sender that did not hear the ACK
  await waitFor('the repeated ACK', () => peer.linkMessages().length > 1, { intervalMs: 5, timeoutMs: 5000 });
  t.same(peer.linkMessages().slice(1), [{ type: MsgType.ACK, nextSeq: 1 }], 'the ACK is repeated: no NAK, which would send the peer back');
  t.equal(delivered.length, 1, 'the copy is not delivered');

  const damaged = encodeFrame(outputBody('next'), 1);
  damaged[4] ^= 0x01;
  peer.write(damaged);
  await waitFor('the NAK', () => peer.linkMessages().length > 2, { intervalMs: 5, timeoutMs: 5000 });
  t.same(peer.linkMessages().slice(2), [{ type: MsgType.NAK, nextSeq: 1 }], 'damage still draws a NAK at once');
});

t.test('a NAK goes back once; asked again before the new copy can have arrived, it is not acted on', async (t) => {
  // 1000 B/s: each 400-byte message is about 0.4 s of line.
  const peer = sessionWithRawPeer(1000);
  t.teardown(peer.close);
  for (let i = 0; i < 3; i++) peer.session.send({ type: 'output', stream: 0, channel: i % 2, data: Buffer.alloc(400, 0x41 + i) });
  await waitFor('the three frames', () => peer.copiesOf(2).length === 1, { intervalMs: 5, timeoutMs: 5000 });
  const nak = encodeFrame(encodeMessage({ type: MsgType.NAK, nextSeq: 0 }), null);
  peer.write(nak);
  await waitFor('frames 0-2 sent again', () => peer.copiesOf(2).length === 2, { intervalMs: 5, timeoutMs: 5000 });
  t.same([0, 1, 2].map((seq) => peer.copiesOf(seq).length), [2, 2, 2], 'go-back-N from frame 0');
  peer.write(nak);
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.same(peer.copiesOf(0).length, 2, 'the new copy of frame 0 is still on the line (0.4 s): the NAK is older than it');
  await new Promise((resolve) => setTimeout(resolve, 1300));
  peer.write(nak);
  await waitFor('frames 0-2 sent a third time', () => peer.copiesOf(2).length === 3, { intervalMs: 5, timeoutMs: 5000 });
  t.pass('once the copy has left the line, a NAK for it is acted on');
});

t.test('without an ACK the oldest frame is sent again once its ACK is overdue, at doubling intervals', async (t) => {
  // 10 000 B/s: a 415-byte frame leaves the line 41.5 ms after it is written. The wait for its
  // ACK is then at least 200 ms plus the line time of the peer's in-flight window (3000 bytes).
  const peer = sessionWithRawPeer(10_000);
  t.teardown(peer.close);
  const start = performance.now();
  peer.session.send({ type: 'output', stream: 0, channel: 0, data: Buffer.alloc(400, 0x41) });
  await waitFor('two copies sent again', () => peer.copiesOf(0).length === 3, { intervalMs: 10, timeoutMs: 10_000 });
  const [first, second, third] = peer.copiesOf(0).map((at) => at - start);
  const frameMs = (peer.session.stats.bytesOut / peer.session.stats.framesOut) / 10; // every frame written is this one
  const wait = 200 + 300;
  t.ok(second - first >= frameMs + wait - 5, `first resend ${Math.round(second - first)} ms after the frame was written (at least ${Math.round(frameMs + wait)})`);
  t.ok(third - second >= frameMs + 2 * wait - 5, `second resend ${Math.round(third - second)} ms after the first (at least ${Math.round(frameMs + 2 * wait)}: doubled)`);
  peer.write(encodeFrame(encodeMessage({ type: MsgType.ACK, nextSeq: 1 }), null));
  await new Promise((resolve) => setTimeout(resolve, 2 * (frameMs + 4 * wait)));
  t.equal(peer.copiesOf(0).length, 3, 'the ACK ends the resending');
});
