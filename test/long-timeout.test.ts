/**
 * wire/long-timeout.ts: a delay beyond one Node timer (24.8 days)
 * waits in steps and fires once, at its end; a shorter one is one timer.
 * (That Node fires an overlong timer at once is shown with real processes in
 * commands-shell.test.ts: a 30-day timeout killed its command at once.)
 */
import t from 'tap';
import { mock } from 'node:test';
import { MAX_TIMER_MS, longTimeout } from '../wire/long-timeout';

t.test('30 days: nothing after one timer, once at the end', async (t) => {
  mock.timers.enable({ apis: ['setTimeout'] });
  t.teardown(() => mock.timers.reset());
  const month = 30 * 24 * 3600 * 1000;
  let fired = 0;
  longTimeout(() => fired++, month);
  mock.timers.tick(MAX_TIMER_MS);
  t.equal(fired, 0, 'not when the first timer ends');
  mock.timers.tick(month - MAX_TIMER_MS - 1);
  t.equal(fired, 0, 'not 1 ms early');
  mock.timers.tick(1);
  t.equal(fired, 1, 'at 30 days');
  mock.timers.tick(month);
  t.equal(fired, 1, 'once');
});

t.test('cleared during a later step: never', async (t) => {
  mock.timers.enable({ apis: ['setTimeout'] });
  t.teardown(() => mock.timers.reset());
  let fired = 0;
  const timer = longTimeout(() => fired++, 3 * MAX_TIMER_MS);
  mock.timers.tick(MAX_TIMER_MS + 5);
  timer.clear();
  mock.timers.tick(3 * MAX_TIMER_MS);
  t.equal(fired, 0);
});

t.test('a short delay is one timer', async (t) => {
  mock.timers.enable({ apis: ['setTimeout'] });
  t.teardown(() => mock.timers.reset());
  let fired = 0;
  longTimeout(() => fired++, 1500);
  mock.timers.tick(1499);
  t.equal(fired, 0);
  mock.timers.tick(1);
  t.equal(fired, 1);
});
