/**
 * Lossy links: the sender's retransmission timer (PROTOCOL.md 7.3). It times
 * the frame whose ACK is awaited longest. Once that frame has been taken by
 * the stream and the timeout (a measured round trip with room for jitter,
 * send-window.ts RoundTrip) has passed, plus the frame's own time on the
 * line at the rate measured, `expired` runs. The wait runs from the frame's
 * write, or from the last progress or expiry if later (as TCP restarts its
 * timer on each ACK, RFC 6298 5.3): frames written together behind a slow
 * line arrive one after another, and the last of them was written as long
 * ago as the first. It doubles after each expiry and stays doubled until a
 * round trip is measured again (Karn: frames sent twice are not timed, so
 * progress alone says nothing of how long the line now takes). Reliable links never arm it: a
 * frame they do not deliver is a peer that is gone (keepalive).
 */
import { performance } from 'node:perf_hooks';
import type { SentFrame } from './send-window';

/** The least room the timeout leaves over the mean round trip (send-window.ts RoundTrip). */
export const MIN_RETRANSMIT_MS = 50;
/** The timer never waits more than this, nor doubles more than MAX_BACKOFF times. */
export const MAX_RETRANSMIT_MS = 10_000;
export const MAX_BACKOFF = 16;

export interface RetransmitTimerOptions {
  /** The frame whose ACK is awaited longest, if any. */
  awaited: () => SentFrame | undefined;
  /** The round trip's timeout now, before backoff. */
  timeoutMs: () => number;
  /** How long `frame` takes on the line at the rate measured (0 while none is). */
  lineMs: (frame: SentFrame) => number;
  /** The awaited frame's ACK is late: the sender treats what is in flight as lost. */
  expired: () => void;
}

export class RetransmitTimer {
  private timer: NodeJS.Timeout | null = null;
  private backoff = 1;
  /** When the wait last began anew: the last progress or expiry (performance.now() ms). */
  private since = -Infinity;

  constructor(private readonly options: RetransmitTimerOptions) {}

  /** Times the frame awaited now, unless the timer already runs. */
  arm(): void {
    if (this.timer) return;
    const awaited = this.options.awaited();
    if (!awaited) return;
    const wait = Math.min(MAX_RETRANSMIT_MS, this.backoff * this.options.timeoutMs() + this.options.lineMs(awaited));
    const due = () => Math.max(awaited.writtenAt ?? performance.now(), this.since) + wait;
    this.timer = setTimeout(() => {
      this.timer = null;
      // Acknowledged meanwhile, or not yet taken by the stream, or sent again since: time again.
      if (this.options.awaited() !== awaited || awaited.writtenAt === null || performance.now() < due()) {
        this.arm();
        return;
      }
      this.backoff = Math.min(MAX_BACKOFF, 2 * this.backoff);
      this.since = performance.now();
      this.options.expired();
    }, Math.max(1, due() - performance.now()));
    this.timer.unref();
  }

  /** A report made progress or timed a frame sent once (`measured`: the wait is a round trip again). */
  progress(measured: boolean): void {
    if (measured) this.backoff = 1;
    this.since = performance.now();
    this.stop();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
