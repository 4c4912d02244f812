/**
 * Lossy links: the sender's retransmission timer (PROTOCOL.md 7.3). It times
 * the frame whose ACK is awaited longest. Once that frame has been taken by
 * the stream and the timeout (a measured round trip with room for jitter,
 * send-window.ts RoundTrip) has passed, `expired` runs; the wait doubles after
 * each expiry until an ACK makes progress, and runs from the last expiry as
 * well: the frame awaited next was written as long ago, and timing it from
 * then would expire at once, frame after frame. Reliable links never arm it: a
 * frame they do not deliver is a peer that is gone (keepalive).
 */
import { performance } from 'node:perf_hooks';
import type { SentFrame } from './send-window';

/** The timer never waits less, nor more, than this; nor doubles more than MAX_BACKOFF times. */
export const MIN_RETRANSMIT_MS = 50;
export const MAX_RETRANSMIT_MS = 10_000;
export const MAX_BACKOFF = 16;

export interface RetransmitTimerOptions {
  /** The frame whose ACK is awaited longest, if any. */
  awaited: () => SentFrame | undefined;
  /** The round trip's timeout now, before backoff. */
  timeoutMs: () => number;
  /** The awaited frame's ACK is late: the sender treats what is in flight as lost. */
  expired: () => void;
}

export class RetransmitTimer {
  private timer: NodeJS.Timeout | null = null;
  private backoff = 1;
  /** When the timer last expired without progress since (performance.now() ms). */
  private expiredAt = -Infinity;

  constructor(private readonly options: RetransmitTimerOptions) {}

  /** Times the frame awaited now, unless the timer already runs. */
  arm(): void {
    if (this.timer) return;
    const awaited = this.options.awaited();
    if (!awaited) return;
    const wait = Math.min(MAX_RETRANSMIT_MS, this.backoff * this.options.timeoutMs());
    const due = () => Math.max(awaited.writtenAt ?? performance.now(), this.expiredAt) + wait;
    this.timer = setTimeout(() => {
      this.timer = null;
      // Acknowledged meanwhile, or not yet taken by the stream, or sent again since: time again.
      if (this.options.awaited() !== awaited || awaited.writtenAt === null || performance.now() < due()) {
        this.arm();
        return;
      }
      this.backoff = Math.min(MAX_BACKOFF, 2 * this.backoff);
      this.expiredAt = performance.now();
      this.options.expired();
    }, Math.max(1, due() - performance.now()));
    this.timer.unref();
  }

  /** An ACK made progress: the wait is a round trip again. */
  progress(): void {
    this.backoff = 1;
    this.expiredAt = -Infinity;
    this.stop();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
