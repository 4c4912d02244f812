/**
 * The session on a lossy link: corrupted and dropped bytes are caught by the
 * CRC and the lost frames sent again (go-back-N with NAK and timeout), so the
 * receiver gets every message exactly once, in order. Also the send queue
 * (output merges while the link is busy) and deflate compression.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Link } from '../wire/link';
import { type Message, MsgType } from '../wire/messages';
import { Session } from '../wire/session';
import { noisyPair } from './helpers/noisy-pipe';

// Sessions unref their timers (a socket keeps a real process alive); in-memory pipes do not.
const alive = setInterval(() => undefined, 1000);
t.teardown(() => clearInterval(alive));

/** `bytesPerSecond` is what the session is told of the line: a slow line makes it queue and merge. */
function sessions(o: { seed: number; bitErrorRate?: number; dropRate?: number; deflate?: boolean; maxBody?: number; bytesPerSecond?: number }) {
  const { a, b, stats } = noisyPair(o);
  const maxBody = o.maxBody ?? 512;
  const bytesPerSecond = o.bytesPerSecond ?? 1_000_000;
  const options = { maxBody, keepalive: 30, deflate: o.deflate };
  const linkA = new Link(a, { lossy: true, bytesPerSecond, maxBody });
  const linkB = new Link(b, { lossy: true, bytesPerSecond, maxBody });
  return { sender: new Session(linkA, options), receiver: new Session(linkB, options), linkA, linkB, stats };
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
  const { sender, receiver, linkB, stats } = sessions({ seed: 7, bitErrorRate: 1e-5, dropRate: 1e-3, maxBody: 256 });
  t.teardown(() => {
    sender.close();
    receiver.close();
  });
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
  const { sender, receiver } = sessions({ seed: 11, bitErrorRate: 1e-4, dropRate: 1e-3, maxBody: 256 });
  t.teardown(() => {
    sender.close();
    receiver.close();
  });
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
  const { sender, receiver, linkA } = sessions({ seed: 1, bytesPerSecond: 10_000 });
  t.teardown(() => {
    sender.close();
    receiver.close();
  });
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
    const plain = sessions({ seed: 3, maxBody: 1024, bytesPerSecond: 10_000 });
    const packed = sessions({ seed: 3, maxBody: 1024, bytesPerSecond: 10_000, deflate: true });
    const chunks = Array.from({ length: 3000 }, (_, i) => make(i));
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const sizes: number[] = [];
    for (const pair of [plain, packed]) {
      const got = collect(pair.receiver, (n) => n >= total);
      for (const data of chunks) pair.sender.send({ type: 'output', stream: 0, channel: 0, data });
      t.ok((await got).equals(Buffer.concat(chunks)), `${kind}: byte-exact`);
      sizes.push(pair.linkA.stats.bytesOut);
      pair.sender.close();
      pair.receiver.close();
    }
    if (kind === 'text') t.ok(sizes[1] * 3 < sizes[0], `text: ${sizes[0]} bytes raw, ${sizes[1]} compressed`);
    else t.ok(sizes[1] <= sizes[0], `random: ${sizes[0]} bytes raw, ${sizes[1]} with deflate on`);
  }
});

t.test('a message larger than a frame goes in fragments and arrives whole', async (t) => {
  const { sender, receiver, linkA } = sessions({ seed: 5, bitErrorRate: 1e-5, dropRate: 1e-3, maxBody: 256 });
  t.teardown(() => {
    sender.close();
    receiver.close();
  });
  const args = { command: ['sh', '-c', 'x'.repeat(3000)], env: { A: 'b'.repeat(500) } };
  const got = new Promise<Message>((resolve) => receiver.on('message', resolve));
  sender.send({ type: MsgType.START, stream: 0, command: 'shell', args });
  const m = await got;
  t.same(m, { type: MsgType.START, stream: 0, command: 'shell', args });
  t.ok(linkA.stats.framesOut >= 14, `sent in ${linkA.stats.framesOut} frames of at most 256 bytes`);
});
