/**
 * What a lossy link's sender keeps in flight (wire/in-flight.ts) and how the
 * send window counts it and times round trips (wire/send-window.ts). The
 * session-level behaviour (a sender that is not answered stops at its floor)
 * is in session-lossy.test.ts.
 */
import t from 'tap';
import { ACK_DELAY_MS } from '../wire/acknowledger';
import { InFlightLimit, MIN_RTT_WINDOW_MS } from '../wire/in-flight';
import { type DeliverySamples, RoundTrip, type SentFrame, SendWindow } from '../wire/send-window';

t.test("InFlightLimit: the floor until a sample, then twice the measured bandwidth-delay product and what the line carries while the receiver holds its report", async (t) => {
  const limit = new InFlightLimit();
  t.equal(limit.bytes(2000), 2000, 'nothing measured: the floor');
  limit.sample(0, 10, 5000); // 500 bytes per ms, 10 ms
  t.equal(ACK_DELAY_MS, 10);
  t.equal(limit.bytes(2000), 15_000, '500 B/ms × (2 × 10 ms + ACK_DELAY_MS)');
  t.equal(limit.bytes(20_000), 20_000, 'never below the floor');
  t.equal(limit.lineMs(1000), 2, 'a frame of 1000 bytes takes 2 ms on the line at the rate measured');
  t.equal(new InFlightLimit().lineMs(1000), 0, 'nothing measured: no line time is assumed');
});

t.test('InFlightLimit: a sender held back by the bound grows it each round trip until the line is full', async (t) => {
  // A line that carries 100 bytes per ms with a 10 ms round trip when nothing queues.
  const limit = new InFlightLimit();
  const bounds: number[] = [];
  let bound = limit.bytes(500);
  let now = 0;
  // Far fewer round trips than MIN_RTT_WINDOW_MS holds: no probe.
  for (let round = 0; round < 200; round++) {
    const queued = Math.max(0, bound - 100 * 10);
    const rtt = 10 + queued / 100;
    limit.sample(now, now + rtt, Math.min(bound, 100 * rtt));
    now += rtt;
    bound = limit.bytes(500);
    bounds.push(Math.round(bound));
  }
  const most = 100 * (2 * 10 + ACK_DELAY_MS);
  t.same(bounds.slice(0, 2), [1500, 3000], 'while the bound holds the sender back, it grows each round trip');
  t.ok(bounds.every((b) => b <= most), `it never passes twice the line's product and what the line carries in ACK_DELAY_MS, ${most} bytes (max ${Math.max(...bounds)})`);
  t.equal(bounds[bounds.length - 1], most, 'and stays there 200 round trips on: the queue it keeps below it does not feed back into the bound');
});

t.test('InFlightLimit: on a fast line, the receiver holding its reports (ACK_DELAY_MS) does not pin the bound to the floor', async (t) => {
  // A line with no rate limit (a pty, a USB gadget): 3 ms there and back when the receiver
  // answers at once (as it does after a PING), but a batch of frames is reported only
  // ACK_DELAY_MS after its first frame arrived. The frames of a round go out together.
  const limit = new InFlightLimit();
  const floor = 2000;
  limit.sample(0, 3, 500);
  let now = 3;
  const bounds: number[] = [];
  for (let round = 0; round < 10; round++) {
    const bound = limit.bytes(floor);
    bounds.push(Math.round(bound));
    const reported = now + 1 + ACK_DELAY_MS; // the first frame arrives after 1 ms, its batch is reported ACK_DELAY_MS later
    limit.sample(now, reported, bound);
    now = reported;
  }
  // Twice the product alone came to 2 × (bound / 11 ms) × 3 ms, less than a round delivered: the bound sat at the floor.
  t.ok(bounds.slice(1).every((b, i) => b > bounds[i]), `it grows each round: ${bounds.join(', ')}`);
  t.ok(bounds[bounds.length - 1] > 10 * floor, `to ${bounds[bounds.length - 1]} bytes in ${bounds.length} rounds, from a floor of ${floor}`);
});

t.test('InFlightLimit: a round trip that stays longer for MIN_RTT_WINDOW_MS is probed and taken', async (t) => {
  const limit = new InFlightLimit();
  let now = 0;
  const roundTrip = (rtt: number, delivered: number) => {
    limit.sample(now, now + rtt, delivered);
    now += rtt;
  };
  roundTrip(10, 1000); // 100 B/ms, 10 ms
  t.equal(limit.bytes(100), 3000);
  // The board got busy: it answers in 40 ms now, at the same rate.
  let before = 0;
  while (limit.bytes(100) !== 100 && now < 2 * MIN_RTT_WINDOW_MS) {
    before = limit.bytes(100);
    roundTrip(40, 4000);
  }
  t.equal(before, 3000, 'until then the bound kept the least round trip, 10 ms');
  t.ok(now > MIN_RTT_WINDOW_MS && now < MIN_RTT_WINDOW_MS + 100, `the least round trip went stale after ${now} ms: the bound falls to the floor while the queue drains`);
  roundTrip(40, 4000); // written before the probe's first round trip was over: still behind the queue
  t.equal(limit.bytes(100), 100, 'a frame written before the queue drained does not end the probe');
  roundTrip(40, 4000);
  t.equal(limit.bytes(100), 9000, 'the next one does: 100 B/ms × (2 × 40 ms + ACK_DELAY_MS)');
});

t.test('InFlightLimit: the rate fades, so the bound follows a line that slows down', async (t) => {
  const limit = new InFlightLimit();
  limit.sample(0, 10, 10_000); // 1000 B/ms
  const fast = limit.bytes(0);
  for (let i = 0; i < 400; i++) limit.sample(10 * i, 10 * i + 10, 100); // now 10 B/ms
  const slow = limit.bytes(0);
  t.equal(Math.round(fast), 30_000);
  t.ok(slow < 450, `after 400 samples at a hundredth of the rate, the bound is ${Math.round(slow)} bytes (10 B/ms × (2 × 10 ms + ACK_DELAY_MS) = 300)`);
});

/** A window of three 100-byte frames, all written and taken by the stream at `at` ms. */
function windowOfThree(at: number, samples: DeliverySamples | null = null) {
  const window = new SendWindow(new RoundTrip(250, 1), null, samples);
  const frames: SentFrame[] = [];
  for (let seq = 0; seq < 3; seq++) {
    const entry = window.add(seq, Buffer.alloc(100));
    window.sending(entry);
    window.taken(entry, at);
    frames.push(entry);
  }
  return { window, frames };
}

t.test('SendWindow counts the bytes in flight: written, and neither reported nor known lost', async (t) => {
  const { window } = windowOfThree(0);
  t.equal(window.inFlightBytes, 300, 'three frames written');
  window.acknowledge(0, Buffer.from([0b01]), 10); // 1 held; 0, written before it, is lost
  t.equal(window.inFlightBytes, 100, 'the held frame and the lost one are no longer in flight: frame 2 is');
  const again = window.nextResend()!;
  t.equal(again.seq, 0);
  window.sending(again);
  t.equal(window.inFlightBytes, 200, 'frame 0 is in flight again once written again');
  window.timedOut(false);
  t.equal(window.inFlightBytes, 100, 'a timeout: the frame it sends again (0) is not in flight until written; frame 2 still is');
  window.acknowledge(3, undefined, 20);
  t.equal(window.inFlightBytes, 0, 'all acknowledged');
  t.equal(window.bytes, 0);

  const resumed = windowOfThree(0).window;
  resumed.resendAll((entry) => entry.frame);
  t.equal(resumed.inFlightBytes, 0, 'a resumed session sends everything again: nothing is in flight until it is written');
});

t.test('SendWindow times the round trip of frames when first reported, not when a gap before them fills', async (t) => {
  const samples: Array<[number, number]> = [];
  const { window, frames } = windowOfThree(0, { sample: (writtenAt, now, delivered) => void samples.push([now - writtenAt, delivered]) });
  window.acknowledge(0, Buffer.from([0b11]), 12); // 1 and 2 held, 0 lost
  t.same(samples, [[12, 200]], 'frame 2, the newest reported: 12 ms, and 200 bytes arrived meanwhile');
  const again = window.nextResend()!;
  window.sending(again);
  window.taken(again, 20);
  window.acknowledge(3, undefined, 2000); // the copy of 0 fills the gap; 1 and 2 were reported long ago
  t.same(samples, [[12, 200]], 'no sample: 0 was sent twice (Karn), 1 and 2 arrived at 12 ms');
  t.equal(window.roundTrip.smoothedMs, 12, 'the round trip stays what was measured, not the 2 s the gap took');
  t.ok(frames.every((f) => f.acked));
});
