/**
 * The session on a lossy link: corrupted and dropped bytes are caught by the
 * CRC and the lost frames sent again (selective repeat, and go-back-N for a
 * peer without it), so the receiver gets every message exactly once, in
 * order. Also the send queue (output merges while the link is busy) and
 * deflate compression.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { bodyLength, bodyParts } from '../wire/body-parts';
import type { Compressor } from '../wire/compression';
import { FrameAuth } from '../wire/frame-auth';
import { FrameReader, authenticatedParts, encodeAuthenticatedFrame } from '../wire/framing';
import { Link } from '../wire/link';
import { type Message, MsgType, type OutgoingMessage, decodeMessage, encodeMessage } from '../wire/messages';
import { IN_FLIGHT_FLOOR_FRAMES, MAX_UNACKED_BYTES_LOSSY, Session } from '../wire/session';
import { FrameSizer, MIN_FRAME_BODY, wireBytes } from '../wire/frame-size';
import type { InFlightLimit } from '../wire/in-flight';
import { memoryLine } from './helpers/line-sim';
import { TEST_KEYS, authenticatedLinks } from './helpers/wire-net';
import { sleep, waitFor } from './helpers/support';

// Sessions unref their timers (a socket keeps a real process alive); in-memory pipes do not.
const alive = setInterval(() => undefined, 1000);
t.teardown(() => clearInterval(alive));

/** Two sessions over a simulated line (in memory) of `bytesPerSecond`, with seeded noise; the sessions know the rate. */
function sessions(o: {
  seed: number;
  bitErrorRate?: number;
  dropRate?: number;
  deflate?: boolean;
  maxBody?: number;
  bytesPerSecond?: number;
  selective?: boolean;
}) {
  const bytesPerSecond = o.bytesPerSecond ?? 1_000_000;
  const { a, b, sim } = memoryLine({ bytesPerSecond, noise: { seed: o.seed, bitErrorRate: o.bitErrorRate, dropRate: o.dropRate } });
  const maxBody = o.maxBody ?? 512;
  const options = { maxBody, keepalive: 30, deflate: o.deflate, selective: o.selective ?? true };
  const [linkA, linkB] = authenticatedLinks(a, b, { lossy: true, bytesPerSecond, maxBody });
  const sender = new Session(linkA, options);
  const receiver = new Session(linkB, options);
  const close = () => {
    sender.close();
    receiver.close();
    sim.close();
  };
  return { sender, receiver, linkA, linkB, stats: sim.stats.ab, sim, close };
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

for (const selective of [true, false]) {
  const how = selective ? 'selective repeat' : 'go-back-N (a peer without selective repeat)';
  t.test(`every byte arrives once, in order, through bit flips and dropped bytes: ${how}`, async (t) => {
    // The noise of the serial issue's test: a bit-error rate of 1e-5 and 0.1 % of bytes dropped.
    const { sender, receiver, linkB, stats, close } = sessions({ seed: 7, bitErrorRate: 1e-5, dropRate: 1e-3, maxBody: 256, selective });
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
    t.equal(linkB.stats.forged, 0, 'and none taken for a forgery');
    const { held, ahead } = receiver.stats;
    if (selective) t.ok(held > 0 && ahead === 0, `frames after a lost one were held (${held}), none dropped`);
    else t.ok(held === 0 && ahead > 0, `frames after a lost one were dropped (${ahead}) and sent again`);
  });
}

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
    const { stats } = (packed.sender as unknown as { compressor: Compressor }).compressor;
    if (kind === 'text') t.ok(sizes[1] * 3 < sizes[0] && stats.packed > 0, `text: ${sizes[0]} bytes raw, ${sizes[1]} compressed`);
    else {
      // Whether output joins into a frame depends on when the line drains, so the two runs'
      // totals differ by their framing (about 1 %): what never grows is each body, sent raw.
      t.ok(stats.tried > 0 && stats.packed === 0, `random: deflate tried on ${stats.tried} bodies, each sent raw (${sizes[0]} bytes without deflate, ${sizes[1]} with)`);
    }
  }
});

t.test('deflate fills a frame with compressed bytes: while text waits, each frame goes nearly full, none over the frame size', async (t) => {
  // 512-byte frames, as on a serial line. Cut before deflate, each frame carried under 512 bytes of
  // text, a tenth of its room on the line: the per-frame overhead and the noise weighed ten times over.
  const { sender, receiver, linkA, close } = sessions({ seed: 11, maxBody: 512, bytesPerSecond: 200_000, deflate: true });
  t.teardown(close);
  const bodies: Array<{ length: number; waiting: number }> = [];
  const encode = linkA.encodeSequenced.bind(linkA);
  linkA.encodeSequenced = (body, seq) => {
    bodies.push({ length: bodyLength(bodyParts(body)), waiting: sender.queuedByteCount });
    return encode(body, seq);
  };
  const text = Buffer.from(Array.from({ length: 1024 }, (_, i) => `${String(i).padStart(7, '0')} cc -c src/module${i % 29}.c -O2 -Wall\n`).join(''));
  const got = collect(receiver, (n) => n >= text.length);
  for (let at = 0; at < text.length; at += 200) sender.send({ type: 'output', stream: 0, channel: 0, data: text.subarray(at, at + 200) });
  t.ok((await got).equals(text), 'byte-exact');
  const largest = Math.max(...bodies.map((b) => b.length));
  t.ok(largest <= 512, `no body over 512 bytes (largest ${largest})`);
  // The first frames go one 200-byte write each, while the line is idle; the rest are cut from a queue.
  const cut = bodies.filter((b) => b.waiting > 0).map((b) => b.length);
  const mean = cut.reduce((n, b) => n + b, 0) / cut.length;
  t.ok(cut.length >= 3 && mean >= 0.75 * 512, `${cut.length} frames cut while more waited, ${Math.round(mean)} bytes on average (all ${bodies.length} frames: ${bodies.map((b) => b.length).join(' ')})`);
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
 * A session (the agent's) on a clean lossy link told it runs at
 * `bytesPerSecond`; the test plays the master frame by frame on the other end
 * and sees every frame the session writes, with when it arrived.
 */
function sessionWithRawPeer(bytesPerSecond: number, selective = true) {
  const { a, b, sim } = memoryLine({ bytesPerSecond });
  const link = new Link(a, { lossy: true, bytesPerSecond, maxBody: 512 });
  link.authenticate(new FrameAuth(TEST_KEYS, 'agent'), () => 0);
  link.setMaxBody(512);
  const session = new Session(link, { maxBody: 512, keepalive: 30, selective });
  const master = new FrameAuth(TEST_KEYS, 'master');
  const reader = new FrameReader(512);
  const frames: Array<{ frame: Buffer; at: number }> = [];
  reader.on('frame', (frame: Buffer) => frames.push({ frame, at: performance.now() }));
  b.on('data', (chunk: Buffer) => reader.feed(chunk));
  let linkNumber = 0;
  const parts = () => frames.map(({ frame, at }) => ({ parts: authenticatedParts(frame)!, at }));
  return {
    session,
    close: () => {
      session.close();
      sim.close();
    },
    /** The link messages (ACK, NAK, PING ...) the session sent, decoded. */
    linkMessages: () => parts().filter(({ parts: p }) => p.body[0] < 0x0a).map(({ parts: p }) => decodeMessage(p.body)),
    /** When each copy of the frame numbered `seq` arrived. */
    copiesOf: (seq: number) => parts().filter(({ parts: p }) => p.body[0] >= 0x0a && p.low === seq).map((f) => f.at),
    /** A sequenced frame from the master, tagged at `seq`. */
    sequenced: (body: Buffer, seq: number) => encodeAuthenticatedFrame(body, seq, master.tag(seq, body)),
    /** A link frame from the master, with its next link-frame number. */
    linkFrame: (m: OutgoingMessage) => {
      const body = encodeMessage(m);
      const number = linkNumber++;
      return encodeAuthenticatedFrame(body, number, master.tag(number, body));
    },
    write: (frame: Buffer) => b.write(frame),
  };
}

const outputBody = (text: string) => encodeMessage({ type: 'output', stream: 0, channel: 0, data: Buffer.from(text) });

t.test('a copy of a frame that already arrived is answered with an ACK, never a NAK', async (t) => {
  const peer = sessionWithRawPeer(10_000);
  t.teardown(peer.close);
  const delivered: Message[] = [];
  peer.session.on('message', (m: Message) => delivered.push(m));
  const frame = peer.sequenced(outputBody('once'), 0);
  peer.write(frame);
  await waitFor('the ACK', () => peer.linkMessages().length > 0, { intervalMs: 5, timeoutMs: 5000 });
  t.same(peer.linkMessages(), [{ type: MsgType.ACK, nextSeq: 1 }]);

  peer.write(frame); // sent again, as by a sender that did not hear the ACK
  await waitFor('the repeated ACK', () => peer.linkMessages().length > 1, { intervalMs: 5, timeoutMs: 5000 });
  t.same(peer.linkMessages().slice(1), [{ type: MsgType.ACK, nextSeq: 1 }], 'the ACK is repeated: no NAK, which would send the peer back');
  t.equal(delivered.length, 1, 'the copy is not delivered');

  const damaged = peer.sequenced(outputBody('next'), 1);
  damaged[4] ^= 0x01;
  peer.write(damaged);
  await waitFor('the NAK', () => peer.linkMessages().length > 2, { intervalMs: 5, timeoutMs: 5000 });
  t.same(peer.linkMessages().slice(2), [{ type: MsgType.NAK, nextSeq: 1 }], 'damage draws a NAK at once');
});

t.test('selective repeat: frames after a gap are held, reported at once by bitmap, and delivered in order when it fills', async (t) => {
  const peer = sessionWithRawPeer(10_000);
  t.teardown(peer.close);
  const delivered: string[] = [];
  peer.session.on('message', (m: Message) => m.type === 'output' && delivered.push(m.data.toString()));
  peer.write(peer.sequenced(outputBody('zero'), 0));
  peer.write(peer.sequenced(outputBody('two'), 2)); // 1 was lost
  peer.write(peer.sequenced(outputBody('three'), 3));
  await waitFor('the gap reported', () => peer.linkMessages().some((m) => m.type === MsgType.ACK && m.received), { intervalMs: 5, timeoutMs: 5000 });
  t.same(delivered, ['zero'], 'only what is in order is delivered');
  const gap = peer.linkMessages().find((m) => m.type === MsgType.ACK && m.received)!;
  t.same(gap, { type: MsgType.ACK, nextSeq: 1, received: Buffer.from([0x01]) }, 'ACK 1: frame 2 (bit 0) is held');
  t.equal(peer.session.heldByteCount, outputBody('two').length + outputBody('three').length, 'two frames held');
  await sleep(50);
  const last = peer.linkMessages().pop()!;
  t.same(last, { type: MsgType.ACK, nextSeq: 1, received: Buffer.from([0x03]) }, 'then on the usual schedule: 2 and 3 held');
  peer.write(peer.sequenced(outputBody('one'), 1));
  await waitFor('all four', () => delivered.length === 4, { intervalMs: 5, timeoutMs: 5000 });
  t.same(delivered, ['zero', 'one', 'two', 'three'], 'in sequence order');
  t.equal(peer.session.heldByteCount, 0, 'nothing held any more');
  await waitFor('ACK 4', () => peer.linkMessages().some((m) => m.type === MsgType.ACK && m.nextSeq === 4 && !m.received), { intervalMs: 5, timeoutMs: 5000 });
  t.equal(peer.session.stats.held, 2);
});

t.test('selective repeat: only the frames the bitmap leaves out, and sent before one it holds, go again', async (t) => {
  const peer = sessionWithRawPeer(100_000);
  t.teardown(peer.close);
  for (let i = 0; i < 6; i++) peer.session.send({ type: MsgType.UPDATE, stream: 0, key: 'n', value: i });
  await waitFor('six frames', () => peer.copiesOf(5).length === 1, { intervalMs: 5, timeoutMs: 5000 });
  // Received: 0, 2 and 4. Missing: 1 and 3 (sent before 4, which arrived), and 5 (sent after: may be on its way).
  peer.write(peer.linkFrame({ type: MsgType.ACK, nextSeq: 1, received: Buffer.from([0b0101]) }));
  await waitFor('1 and 3 again', () => peer.copiesOf(3).length === 2, { intervalMs: 5, timeoutMs: 5000 });
  await sleep(30);
  t.same([0, 2, 4, 5].map((seq) => peer.copiesOf(seq).length), [1, 1, 1, 1], 'neither what arrived nor what was sent after 4 went again');
  t.ok(peer.copiesOf(1).length >= 2, 'frame 1 went again');
  // The peer never acknowledges them: the timer may send the awaited frame (1) again too.
  const { resent, timeouts } = peer.session.stats;
  t.equal(resent, 2 + timeouts, `1 and 3 were sent again, and frame 1 once more per timeout (${timeouts})`);
  peer.write(peer.linkFrame({ type: MsgType.ACK, nextSeq: 6 }));
  await sleep(30);
  t.equal(peer.session.unackedByteCount, 0, 'all acknowledged');
});

t.test('selective repeat: a NAK (a damaged frame) sends again the first frame written after the last one received', async (t) => {
  const peer = sessionWithRawPeer(100_000);
  t.teardown(peer.close);
  for (let i = 0; i < 4; i++) peer.session.send({ type: MsgType.UPDATE, stream: 0, key: 'n', value: i });
  await waitFor('four frames', () => peer.copiesOf(3).length === 1, { intervalMs: 5, timeoutMs: 5000 });
  // 0 arrived, then a damaged frame: that was 1.
  peer.write(peer.linkFrame({ type: MsgType.NAK, nextSeq: 1 }));
  await waitFor('1 again', () => peer.copiesOf(1).length === 2, { intervalMs: 5, timeoutMs: 5000 });
  await sleep(30);
  t.same([0, 2, 3].map((seq) => peer.copiesOf(seq).length), [1, 1, 1], 'only frame 1 went again');
  const { resent, timeouts } = peer.session.stats;
  t.equal(resent, 1 + timeouts, `once for the NAK, and once per timeout (${timeouts})`);
});

t.test('go-back-N: a NAK goes back once; asked again within a round trip of the new copy, it is not acted on', async (t) => {
  // 1000 B/s: each 400-byte message is about 0.4 s of line.
  const peer = sessionWithRawPeer(1000, false);
  t.teardown(peer.close);
  for (let i = 0; i < 3; i++) peer.session.send({ type: 'output', stream: 0, channel: i % 2 === 0 ? 0 : 1, data: Buffer.alloc(400, 0x41 + i) });
  await waitFor('the three frames', () => peer.copiesOf(2).length === 1, { intervalMs: 5, timeoutMs: 5000 });
  peer.write(peer.linkFrame({ type: MsgType.NAK, nextSeq: 0 }));
  await waitFor('frames 0-2 sent again', () => peer.copiesOf(2).length === 2, { intervalMs: 5, timeoutMs: 5000 });
  t.same([0, 1, 2].map((seq) => peer.copiesOf(seq).length), [2, 2, 2], 'go-back-N from frame 0');
  peer.write(peer.linkFrame({ type: MsgType.NAK, nextSeq: 0 }));
  await sleep(200);
  t.same(peer.copiesOf(0).length, 2, 'the new copy of frame 0 was written less than a round trip ago: the NAK is older than it');
});

t.test('without an ACK the awaited frame is sent again once its ACK is overdue, at doubling intervals', async (t) => {
  // 10 000 B/s: before any round trip is measured the wait is 250 ms + 4 frames' line time (4 × 51.2 ms).
  const peer = sessionWithRawPeer(10_000);
  t.teardown(peer.close);
  const start = performance.now();
  peer.session.send({ type: 'output', stream: 0, channel: 0, data: Buffer.alloc(400, 0x41) });
  await waitFor('two copies sent again', () => peer.copiesOf(0).length === 3, { intervalMs: 10, timeoutMs: 10_000 });
  const [first, second, third] = peer.copiesOf(0).map((at) => at - start);
  const wait = 250 + 4 * 51.2;
  t.ok(second - first >= wait - 5, `first resend ${Math.round(second - first)} ms after the frame (at least ${Math.round(wait)})`);
  t.ok(third - second >= 2 * wait - 5, `second resend ${Math.round(third - second)} ms after the first (at least ${Math.round(2 * wait)}: doubled)`);
  peer.write(peer.linkFrame({ type: MsgType.ACK, nextSeq: 1 }));
  await sleep(2 * 4 * wait);
  t.equal(peer.copiesOf(0).length, 3, 'the ACK ends the resending');
  t.equal(peer.session.stats.timeouts, 2);
});

t.test('a measured round trip sets the wait: a line faster than its nominal rate is not waited on as if slow', async (t) => {
  // Nominal 1000 B/s (a 512-byte frame is half a second of line), but the line runs at 1 MB/s,
  // as a pty or a USB gadget does whatever baud it is set to.
  const { a, b, sim } = memoryLine({ bytesPerSecond: 1_000_000 });
  const [linkA, linkB] = authenticatedLinks(a, b, { lossy: true, bytesPerSecond: 1000, maxBody: 512 });
  const sender = new Session(linkA, { maxBody: 512, keepalive: 30, selective: true });
  const receiver = new Session(linkB, { maxBody: 512, keepalive: 30, selective: true });
  t.teardown(() => {
    sender.close();
    receiver.close();
    sim.close();
  });
  const got = collect(receiver, (n) => n >= 40 * 400);
  for (let i = 0; i < 40; i++) sender.send({ type: 'output', stream: 0, channel: 0, data: Buffer.alloc(400, 0x30 + (i % 10)) });
  await got;
  await sleep(50);
  const rto = (sender as unknown as { sender: { roundTrip: { timeoutMs: number } } }).sender.roundTrip.timeoutMs;
  // Measured: the round trip through up to ACK_DELAY_MS of queue the in-flight bound allows (70-130 ms in runs here).
  t.ok(rto < 250, `the retransmission wait is ${Math.round(rto)} ms, from the line as measured (nominal rate: over 2000 ms)`);
});

t.test('a lossy link keeps few bytes in flight: a sender that hears nothing stops at its floor, not at the unacknowledged window', async (t) => {
  // 100 000 B/s: in 150 ms the line carries 15 000 bytes, and the first retransmission timeout is 270 ms away.
  const peer = sessionWithRawPeer(100_000);
  t.teardown(peer.close);
  for (let i = 0; i < 40; i++) peer.session.send({ type: 'output', stream: 0, channel: i % 2, data: Buffer.alloc(400, 0x41 + (i % 26)) });
  await sleep(150);
  const sent = (upTo: number) => Array.from({ length: upTo }, (_, seq) => peer.copiesOf(seq).length).filter((n) => n > 0).length;
  const floor = IN_FLIGHT_FLOOR_FRAMES * wireBytes(512);
  const frames = sent(40);
  const frameBytes = peer.session.unackedByteCount / frames;
  t.ok((frames - 1) * frameBytes < floor && frames * frameBytes >= floor,
    `${frames} frames of ${frameBytes} bytes went: until the floor of ${floor} bytes was reached, though the window takes ${MAX_UNACKED_BYTES_LOSSY}`);
  t.equal(peer.session.stats.timeouts, 0, 'before any timeout');
  peer.write(peer.linkFrame({ type: MsgType.ACK, nextSeq: frames }));
  await waitFor('more frames once those are reported', () => sent(40) > frames, { intervalMs: 5, timeoutMs: 5000 });
  t.pass('the report lets more go');
});

/** `bytes` of random output through a clean line of `bytesPerSecond` in 400-byte pieces, checked byte-exact; the sending session. */
async function cleanTransfer(t: Test, seed: number, bytesPerSecond: number, bytes: number): Promise<Session> {
  const { sender, receiver, close } = sessions({ seed, bytesPerSecond, maxBody: 512 });
  t.teardown(close);
  const data = randomBytes(bytes);
  const got = collect(receiver, (n) => n >= data.length);
  for (let at = 0; at < data.length; at += 400) sender.send({ type: 'output', stream: 1, channel: 0, data: data.subarray(at, at + 400) });
  t.ok((await got).equals(data), 'byte-exact');
  return sender;
}

t.test('the in-flight bound is measured from the line: on a fast line it grows past the floor, and every byte arrives', async (t) => {
  const sender = await cleanTransfer(t, 3, 2_000_000, 400_000);
  const floor = IN_FLIGHT_FLOOR_FRAMES * wireBytes(512);
  const bound = (sender as unknown as { inFlightLimit: InFlightLimit }).inFlightLimit.bytes(floor);
  t.ok(bound > floor, `the bound grew to ${Math.round(bound)} bytes, over the floor of ${floor}`);
});

t.test('a clean lossy line at a steady pace sends nothing twice: the retransmission wait keeps room over the round trip', async (t) => {
  const sender = await cleanTransfer(t, 5, 100_000, 300_000);
  t.same({ resent: sender.stats.resent, timeouts: sender.stats.timeouts }, { resent: 0, timeouts: 0 }, 'no frame went twice');
});

const lossPerByte = (s: Session) => (s as unknown as { sizer: FrameSizer }).sizer.lossPerByte.toExponential(2);

t.test('frame size: the sender shrinks its frames on a noisy line and grows them back when it is clean', async (t) => {
  const { sender, receiver, close, sim } = sessions({ seed: 13, bitErrorRate: 1e-5, dropRate: 1e-3, maxBody: 512, bytesPerSecond: 200_000 });
  t.teardown(close);
  t.equal(sender.frameLimit, 512, 'max_frame to begin with');
  const noisy = randomBytes(150_000);
  let got = collect(receiver, (n) => n >= noisy.length);
  for (let at = 0; at < noisy.length; at += 400) sender.send({ type: 'output', stream: 1, channel: 0, data: noisy.subarray(at, at + 400) });
  t.ok((await got).equals(noisy), 'byte-exact through the noise');
  const shrunk = sender.frameLimit;
  t.ok(shrunk < 512 && shrunk >= MIN_FRAME_BODY, `frames shrank to ${shrunk} bytes (loss per byte ${lossPerByte(sender)})`);
  t.ok(receiver.stats.held > 0, `and frames after lost ones were held and delivered in order (${receiver.stats.held})`);
  sim.setNoise({ seed: 13 });
  receiver.removeAllListeners('message');
  const clean = randomBytes(600_000);
  got = collect(receiver, (n) => n >= clean.length);
  for (let at = 0; at < clean.length; at += 400) sender.send({ type: 'output', stream: 1, channel: 0, data: clean.subarray(at, at + 400) });
  t.ok((await got).equals(clean), 'byte-exact on the clean line');
  t.equal(sender.frameLimit, 512, `back to max_frame (loss per byte ${lossPerByte(sender)})`);
});

t.test('FrameSizer: the size that carries most through the loss it has seen', async (t) => {
  const sizer = new FrameSizer(512);
  for (let i = 0; i < 2000; i++) sizer.delivered(530);
  t.equal(sizer.size, 512, 'a clean line: max_frame');
  // About one byte in a thousand lost: a 530-byte frame is lost 41 % of the time.
  for (let i = 0; i < 2000; i++) (i % 12 < 5 ? sizer.lostFrame(530) : sizer.delivered(530));
  t.ok(sizer.lossPerByte > 5e-4 && sizer.lossPerByte < 2e-3, `loss per byte ${sizer.lossPerByte.toExponential(2)}`);
  t.ok(sizer.size >= 96 && sizer.size <= 256, `frames of ${sizer.size} bytes`);
  for (let i = 0; i < 4000; i++) sizer.delivered(sizer.size + 20);
  t.equal(sizer.size, 512, 'clean again: max_frame again');
  const tiny = new FrameSizer(64);
  for (let i = 0; i < 500; i++) tiny.lostFrame(80);
  t.equal(tiny.size, 64, 'never below the floor, nor above max_frame');
});

t.test('an ERROR is answered with nothing, not even the ACK that was owed', async (t) => {
  const peer = sessionWithRawPeer(10_000);
  t.teardown(peer.close);
  const closed = new Promise<Error | null>((resolve) => peer.session.once('close', resolve));
  peer.write(peer.sequenced(outputBody('owed an ACK'), 0));
  peer.write(peer.linkFrame({ type: MsgType.ERROR, code: 15, message: 'going away' }));
  const error = await closed;
  await sleep(50);
  t.match(error, { code: 'SHUTDOWN', fromPeer: true }, 'the session ends with the peer\'s reason');
  t.same(peer.linkMessages(), [], 'and sends nothing back');
});
