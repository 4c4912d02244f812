/**
 * When a receiver owes its peer an ACK or a NAK (wire/acknowledger.ts,
 * PROTOCOL.md 7.3), and when a sender on a lossy line gives up waiting for
 * one (wire/retransmit-timer.ts). The session tests see these rules only
 * through their effect on throughput; here each rule is checked alone.
 */
import t from 'tap';
import { performance } from 'node:perf_hooks';
import { ACK_DELAY_MS, ACK_EVERY_BYTES, ACK_EVERY_FRAMES, type AckType, Acknowledger, MIN_NAK_REPEAT_MS } from '../wire/acknowledger';
import { MsgType } from '../wire/messages';
import { MIN_RETRANSMIT_MS, RetransmitTimer } from '../wire/retransmit-timer';
import { RoundTrip, type SentFrame, SendWindow } from '../wire/send-window';
import { sleep, waitFor } from './helpers/support';

function acknowledger(opts: { lossy?: boolean; selective?: boolean; turnaroundMs?: number } = {}) {
  const replies: AckType[] = [];
  let now = 1_000_000;
  const acks = new Acknowledger({
    reply: (type) => replies.push(type),
    lossy: opts.lossy ?? false,
    selective: opts.selective ?? false,
    turnaroundMs: () => opts.turnaroundMs ?? 0,
    now: () => now,
  });
  return { acks, replies, advance: (ms: number) => void (now += ms) };
}

t.test(`an ACK after ${ACK_EVERY_FRAMES} frames, and not before`, async (t) => {
  const { acks, replies } = acknowledger();
  for (let i = 1; i < ACK_EVERY_FRAMES; i++) acks.arrived(10);
  t.same(replies, [], `${ACK_EVERY_FRAMES - 1} frames owe nothing yet`);
  acks.arrived(10);
  t.same(replies, [MsgType.ACK]);
  acks.stop();
});

t.test(`an ACK once ${ACK_EVERY_BYTES} bytes of bodies arrived`, async (t) => {
  const { acks, replies } = acknowledger();
  acks.arrived(ACK_EVERY_BYTES / 2);
  acks.arrived(ACK_EVERY_BYTES / 2 - 1);
  t.same(replies, []);
  acks.arrived(1);
  t.same(replies, [MsgType.ACK]);
  acks.stop();
});

t.test(`an ACK ${ACK_DELAY_MS} ms after the first frame owed one, then nothing more`, async (t) => {
  const { acks, replies } = acknowledger();
  const start = performance.now();
  acks.arrived(1);
  acks.arrived(1);
  t.same(replies, [], 'not at once');
  await waitFor('the delayed ACK', () => replies.length > 0, { timeoutMs: 2000, intervalMs: 1 });
  t.ok(performance.now() - start >= ACK_DELAY_MS - 1, 'not before the delay');
  await sleep(3 * ACK_DELAY_MS);
  t.same(replies, [MsgType.ACK], 'one ACK for both frames');
  acks.flush();
  t.same(replies, [MsgType.ACK], 'flush owes nothing once acknowledged');
});

t.test('a gap is acknowledged at once, once; a new gap again', async (t) => {
  const { acks, replies } = acknowledger({ lossy: true, selective: true });
  acks.gap(5);
  t.same(replies, [MsgType.ACK], 'at once');
  acks.gap(5);
  acks.gap(5);
  t.same(replies, [MsgType.ACK], 'the same gap waits for the usual schedule');
  acks.gap(9);
  t.same(replies, [MsgType.ACK, MsgType.ACK], 'a gap further on');
  acks.stop();
});

t.test('go-back-N: one NAK for the frames behind a lost one; again when the peer went back, or after the repeat interval', async (t) => {
  const { acks, replies, advance } = acknowledger({ lossy: true, turnaroundMs: 20 });
  acks.missing(5, 1);
  t.same(replies, [MsgType.NAK]);
  acks.missing(5, 2);
  acks.missing(5, 3);
  t.same(replies, [MsgType.NAK], 'frames already on the line behind the lost one');
  acks.missing(5, 1);
  t.same(replies, [MsgType.NAK, MsgType.NAK], 'a frame nearer than the last: the peer went back and lost it again');
  advance(MIN_NAK_REPEAT_MS + ACK_DELAY_MS - 1);
  acks.missing(5, 2);
  t.same(replies.length, 2, 'within the repeat interval');
  advance(1);
  acks.missing(5, 3);
  t.same(replies.length, 3, 'the NAK may have been lost: again after the interval');
  acks.missing(6, 1);
  t.same(replies.length, 4, 'a NAK for the next frame at once');
});

t.test('the repeat interval grows with the turnaround', async (t) => {
  const { acks, replies, advance } = acknowledger({ lossy: true, turnaroundMs: 500 });
  acks.missing(5, 1);
  advance(500 + ACK_DELAY_MS - 1);
  acks.missing(5, 2);
  t.equal(replies.length, 1);
  advance(1);
  acks.missing(5, 3);
  t.equal(replies.length, 2);
});

t.test('a damaged frame: NAK at once with selective repeat, the go-back-N NAK without; nothing on a reliable link', async (t) => {
  const selective = acknowledger({ lossy: true, selective: true });
  selective.acks.damaged(3);
  selective.acks.damaged(3);
  t.same(selective.replies, [MsgType.NAK, MsgType.NAK], 'each damaged frame');
  const goBack = acknowledger({ lossy: true });
  goBack.acks.damaged(3);
  goBack.acks.damaged(3);
  t.same(goBack.replies, [MsgType.NAK], 'go-back-N asks once per repeat interval');
  const reliable = acknowledger();
  reliable.acks.damaged(3);
  reliable.acks.missing(3, 0);
  t.same(reliable.replies, [], 'TCP: noise cannot damage a frame that passed the socket');
});

t.test('a NAK settles the ACK owed, as does a held ACK once sent; stop() forgets it', async (t) => {
  const { acks, replies } = acknowledger({ lossy: true, selective: true });
  acks.arrived(1);
  acks.damaged(0);
  await sleep(3 * ACK_DELAY_MS);
  t.same(replies, [MsgType.NAK], 'no ACK after the NAK');
  acks.arrived(1);
  acks.stop();
  await sleep(3 * ACK_DELAY_MS);
  acks.flush();
  t.same(replies, [MsgType.NAK], 'nothing owed after stop()');
  acks.arrived(1);
  acks.send(MsgType.ACK);
  await sleep(3 * ACK_DELAY_MS);
  acks.flush();
  t.same(replies, [MsgType.NAK, MsgType.ACK], 'a held ACK sent at last settles what arrived meanwhile');
});

/** A frame as the send window keeps it, taken by the stream at `writtenAt` (null: not yet). */
function frame(writtenAt: number | null): SentFrame {
  const entry = new SendWindow(new RoundTrip(250, 50)).add(0, Buffer.alloc(1));
  entry.writtenAt = writtenAt;
  return entry;
}

t.test('the retransmission timer: expires after the timeout, doubles its wait on each expiry, and a round trip again on progress', async (t) => {
  let awaited: SentFrame | undefined = frame(performance.now());
  const expiries: number[] = [];
  const timer = new RetransmitTimer({ awaited: () => awaited, timeoutMs: () => 20, lineMs: () => 0, expired: () => void expiries.push(performance.now()) });
  t.teardown(() => timer.stop());
  const waits: number[] = [];
  for (let i = 0; i < 3; i++) {
    awaited = frame(performance.now());
    const start = awaited.writtenAt!;
    timer.arm();
    await waitFor(`expiry ${i + 1}`, () => expiries.length > i, { timeoutMs: 5000, intervalMs: 1 });
    waits.push(expiries[i] - start);
  }
  t.ok(waits[0] >= 19, `first wait ${waits[0].toFixed(1)} ms, the timeout`);
  t.ok(waits[1] >= 39, `second ${waits[1].toFixed(1)} ms, doubled`);
  t.ok(waits[2] >= 79, `third ${waits[2].toFixed(1)} ms, doubled again`);
  timer.progress(true);
  awaited = frame(performance.now());
  const start = awaited.writtenAt!;
  timer.arm();
  await waitFor('the expiry after progress', () => expiries.length > 3, { timeoutMs: 5000, intervalMs: 1 });
  t.ok(expiries[3] - start < 79, `after progress: ${(expiries[3] - start).toFixed(1)} ms, not the backed-off wait`);
});

t.test('the retransmission timer runs from the last progress, and gives the frame its own time on the line', async (t) => {
  // The last of a burst written together to a slow line: written a second ago, its turn on the line only now.
  const awaited = frame(performance.now() - 1000);
  const expiries: number[] = [];
  const timer = new RetransmitTimer({ awaited: () => awaited, timeoutMs: () => 20, lineMs: (f) => (f === awaited ? 30 : 0), expired: () => void expiries.push(performance.now()) });
  t.teardown(() => timer.stop());
  timer.progress(true); // the frame before it was just reported
  const start = performance.now();
  timer.arm();
  await waitFor('the expiry', () => expiries.length === 1, { timeoutMs: 5000, intervalMs: 1 });
  t.ok(expiries[0] - start >= 49, `${(expiries[0] - start).toFixed(1)} ms after the progress: the timeout (20) and its line time (30), not at once`);
});

t.test('the retransmission timer keeps its backoff through progress that measured no round trip (Karn)', async (t) => {
  let awaited: SentFrame | undefined = frame(performance.now());
  const expiries: number[] = [];
  const timer = new RetransmitTimer({ awaited: () => awaited, timeoutMs: () => 20, lineMs: () => 0, expired: () => void expiries.push(performance.now()) });
  t.teardown(() => timer.stop());
  timer.arm();
  await waitFor('the expiry', () => expiries.length === 1, { timeoutMs: 5000, intervalMs: 1 });
  // The copy sent again is acknowledged: progress, but a frame sent twice is not timed.
  timer.progress(false);
  awaited = frame(performance.now());
  let start = awaited.writtenAt!;
  timer.arm();
  await waitFor('the second expiry', () => expiries.length === 2, { timeoutMs: 5000, intervalMs: 1 });
  t.ok(expiries[1] - start >= 39, `${(expiries[1] - start).toFixed(1)} ms: still the doubled wait`);
  timer.progress(true);
  awaited = frame(performance.now());
  start = awaited.writtenAt!;
  timer.arm();
  await waitFor('the third expiry', () => expiries.length === 3, { timeoutMs: 5000, intervalMs: 1 });
  t.ok(expiries[2] - start < 39, `${(expiries[2] - start).toFixed(1)} ms once a round trip was measured: the timeout again`);
});

t.test('the retransmission wait leaves room over a steady round trip: the mean and at least MIN_RETRANSMIT_MS', async (t) => {
  const steady = new RoundTrip(250, MIN_RETRANSMIT_MS);
  for (let i = 0; i < 100; i++) steady.sample(223);
  t.equal(steady.timeoutMs, 223 + MIN_RETRANSMIT_MS, 'no deviation left, but an ACK a little late is not taken for a loss');
  const jittery = new RoundTrip(250, MIN_RETRANSMIT_MS);
  for (let i = 0; i < 100; i++) jittery.sample(i % 2 === 0 ? 100 : 200);
  t.ok(jittery.timeoutMs > 150 + 4 * 40, `a varying one: mean + 4 × deviation (${Math.round(jittery.timeoutMs)} ms)`);
});

t.test('the retransmission timer: after an expiry, the next frame awaited, written as long ago, waits the doubled timeout from the expiry', async (t) => {
  // Frames written a second ago, behind a line's buffers: each is long overdue when it becomes the one awaited.
  const written = performance.now() - 1000;
  let awaited: SentFrame | undefined = frame(written);
  const expiries: number[] = [];
  const timer = new RetransmitTimer({
    awaited: () => awaited,
    timeoutMs: () => 20,
    lineMs: () => 0,
    expired: () => {
      expiries.push(performance.now());
      awaited = frame(written); // the expired one goes again; the next oldest is awaited
      timer.arm(); // as the session does once it has written the frame again
    },
  });
  t.teardown(() => timer.stop());
  timer.arm();
  await waitFor('the first expiry', () => expiries.length === 1, { timeoutMs: 5000, intervalMs: 1 });
  await waitFor('the second expiry', () => expiries.length === 2, { timeoutMs: 5000, intervalMs: 1 });
  t.ok(expiries[1] - expiries[0] >= 39, `${(expiries[1] - expiries[0]).toFixed(1)} ms between them: the doubled wait, not at once`);
  timer.stop();
  t.equal(expiries.length, 2);
});

t.test('the retransmission timer waits for the frame to be written, and never expires for one acknowledged meanwhile', async (t) => {
  const awaitedFrame = frame(null);
  let awaited: SentFrame | undefined = awaitedFrame;
  let expired = 0;
  const timer = new RetransmitTimer({ awaited: () => awaited, timeoutMs: () => 10, lineMs: () => 0, expired: () => void expired++ });
  t.teardown(() => timer.stop());
  timer.arm();
  await sleep(60);
  t.equal(expired, 0, 'not taken by the stream yet: it cannot be late');
  awaitedFrame.writtenAt = performance.now();
  await waitFor('the expiry once written', () => expired === 1, { timeoutMs: 5000, intervalMs: 1 });
  awaited = frame(performance.now());
  timer.arm();
  awaited = undefined;
  await sleep(80);
  t.equal(expired, 1, 'acknowledged before the timeout');
});
