/**
 * The receiving side of acknowledgement (PROTOCOL.md 7.3): when this side
 * owes the peer an ACK or a NAK. The session tells it what arrived; it says
 * when a reply goes, and the session builds that reply from the receive
 * window of the moment (`reply`).
 *
 *   ACK  at the latest after ACK_EVERY_FRAMES frames or ACK_EVERY_BYTES of
 *        bodies, or ACK_DELAY_MS after the first frame not yet acknowledged;
 *        at once when a gap opens (selective repeat), once per gap
 *   NAK  selective repeat: at once for a damaged frame. Go-back-N (and
 *        selective repeat past its hold bounds): for the frame expected, and
 *        again for it only when the peer has evidently gone back or a repeat
 *        interval has passed (the NAK may be lost)
 *
 * A NAK acknowledges as an ACK does, so either reply settles what is owed.
 */
import { MsgType } from './messages';

export const ACK_EVERY_FRAMES = 32;
export const ACK_EVERY_BYTES = 32 * 1024;
export const ACK_DELAY_MS = 10;
/** Least time before a go-back-N receiver repeats a NAK for the same frame. */
export const MIN_NAK_REPEAT_MS = 50;

export type AckType = typeof MsgType.ACK | typeof MsgType.NAK;

export interface AcknowledgerOptions {
  /** Sends an ACK or NAK with the receive state of now. */
  reply: (type: AckType) => void;
  /** A line that loses frames: go-back-N asks again for what a damaged frame held. */
  lossy: boolean;
  /** The peer holds frames after a gap (selective repeat). */
  selective: boolean;
  /** About one round trip, or a few frames' line time if longer: how long a NAK takes to take effect. */
  turnaroundMs: () => number;
  now?: () => number;
}

export class Acknowledger {
  private pendingFrames = 0;
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  /** The expected number an immediate ACK (a gap) was sent for. */
  private gapAckedAt = -1;
  /** Go-back-N: the last NAK sent, and how far ahead the last frame after the gap was. */
  private lastNak = { seq: -1, at: 0, ahead: 0 };
  private readonly now: () => number;

  constructor(private readonly options: AcknowledgerOptions) {
    this.now = options.now ?? Date.now;
  }

  /** A frame arrived that is owed an ACK: delivered in order (`bytes` of body), or a duplicate (0). */
  arrived(bytes: number): void {
    this.pendingFrames++;
    this.pendingBytes += bytes;
    if (this.pendingFrames >= ACK_EVERY_FRAMES || this.pendingBytes >= ACK_EVERY_BYTES) {
      this.send(MsgType.ACK);
      return;
    }
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), ACK_DELAY_MS);
      this.timer.unref();
    }
  }

  /** Selective repeat: frames are held after the gap at `expected`. The sender hears at once, once per gap. */
  gap(expected: number): void {
    if (this.gapAckedAt === expected) {
      this.arrived(0);
      return;
    }
    this.gapAckedAt = expected;
    this.send(MsgType.ACK);
  }

  /**
   * Go-back-N: the frame `expected` is missing and a frame `ahead` of it
   * arrived (0: one arrived damaged). The frames already on the line behind
   * a lost one need not each send a NAK.
   */
  missing(expected: number, ahead: number): void {
    if (!this.options.lossy && ahead === 0) return;
    const now = this.now();
    const last = this.lastNak;
    const newRound = ahead > 0 && last.ahead > 0 && ahead <= last.ahead;
    if (last.seq === expected && !newRound && now - last.at < this.nakRepeatMs()) {
      if (ahead > 0) last.ahead = ahead;
      return;
    }
    this.lastNak = { seq: expected, at: now, ahead };
    this.send(MsgType.NAK);
  }

  /** A frame failed its CRC on a lossy line: the sender should hear now. */
  damaged(expected: number): void {
    if (!this.options.lossy) return;
    if (this.options.selective) this.send(MsgType.NAK);
    else this.missing(expected, 0);
  }

  /** Sends the ACK owed, if any. */
  flush(): void {
    if (this.pendingFrames > 0) this.send(MsgType.ACK);
  }

  /** Forgets what is owed (the link is gone; a resumed session's handshake carries the state). */
  stop(): void {
    this.clearTimer();
    this.pendingFrames = this.pendingBytes = 0;
  }

  /** Replies now (an ACK held back while the transport was full): it settles what is owed. */
  send(type: AckType): void {
    this.stop();
    this.options.reply(type);
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private nakRepeatMs(): number {
    return Math.max(MIN_NAK_REPEAT_MS, this.options.turnaroundMs()) + ACK_DELAY_MS;
  }
}
