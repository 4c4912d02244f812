/**
 * setTimeout for any delay. Node holds a timer for 2^31 - 1 ms (24.8 days)
 * at most and fires one set beyond that at once; the master's timeout,
 * maxTime and sigtermTime are seconds without a bound (buildbot-worker's
 * reactor.callLater takes any), so a longer delay waits in steps.
 */

/** The longest delay one Node timer holds. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimeout {
  clear(): void;
}

export function longTimeout(fn: () => void, ms: number): LongTimeout {
  let timer: NodeJS.Timeout;
  const wait = (left: number): void => {
    timer = setTimeout(() => (left > MAX_TIMER_MS ? wait(left - MAX_TIMER_MS) : fn()), Math.min(left, MAX_TIMER_MS));
  };
  wait(ms);
  return { clear: () => clearTimeout(timer) };
}
