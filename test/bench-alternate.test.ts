/**
 * How the bench times Tether against buildbot-worker (bench/lib.ts
 * alternate). A first build after a start pays for V8 compiling the agent's
 * and tether-master's hot path (the 50 MB log's first builds took the agent
 * 450-470 ms of CPU, the later ones 240-300), and a build that always runs
 * second runs on what the first left behind: so one run of each goes first
 * and is left out, and the pairs take turns at going first.
 */
import t from 'tap';
import { alternate, type Side } from '../bench/lib';

t.test('one run of each first, left out; then pairs taking turns at going first', async (t) => {
  const calls: Side[] = [];
  // Each run's time is its call number: the figures show which calls they came from.
  const got = await alternate(3, async (side) => {
    calls.push(side);
    return { side, ms: calls.length };
  }, (run) => run.ms);
  t.same(calls, ['a', 'b', 'a', 'b', 'b', 'a', 'a', 'b']);
  t.same(got.first, { a: { side: 'a', ms: 1 }, b: { side: 'b', ms: 2 } });
  t.same(got.a.map((r) => r.ms), [3, 6, 7], "A's runs, in pair order");
  t.same(got.b.map((r) => r.ms), [4, 5, 8], "B's runs, in pair order");
  t.same(got.ratios, [3 / 4, 6 / 5, 7 / 8], 'each pair as A / B, whichever went first');
});

t.test('no pairs: the first runs only', async (t) => {
  const calls: Side[] = [];
  const got = await alternate(0, async (side) => void calls.push(side), () => 1);
  t.same(calls, ['a', 'b']);
  t.same([got.a.length, got.b.length, got.ratios.length], [0, 0, 0]);
});
