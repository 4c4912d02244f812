/**
 * The delays between attempts to attach a worker to Buildbot are
 * buildbot-worker's (Twisted's backoffPolicy: initialDelay 1 s, factor 1.5,
 * maxDelay 60 s, jitter random() s). The reconnects themselves run against a
 * real Buildbot master in buildbot-reconnect.test.ts.
 */
import t from 'tap';
import { retryDelayMs } from '../master-plugin/buildbot-attach';

t.test("retry delays are Twisted's backoffPolicy(), as buildbot-worker's", async (t) => {
  const noJitter = () => 0;
  const seconds = Array.from({ length: 12 }, (_, i) => Number((retryDelayMs(i + 1, undefined, noJitter) / 1000).toFixed(3)));
  t.same(seconds, [1.5, 2.25, 3.375, 5.063, 7.594, 11.391, 17.086, 25.629, 38.443, 57.665, 60, 60]);
  t.equal(retryDelayMs(100_000, undefined, noJitter), 60_000, 'no overflow for a long outage');
  t.equal(retryDelayMs(1, undefined, () => 0.999), 1500 + 999, 'up to 1 s of jitter, on top of the delay');
  t.equal(retryDelayMs(3, 2000, noJitter), 2000, 'the cap (--buildbot-max-backoff) applies before jitter');
  t.equal(retryDelayMs(7, 2000, () => 0.5), 2500);
});
