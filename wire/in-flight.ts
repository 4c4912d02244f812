/**
 * Lossy links: how many bytes of frames may be in flight, that is written and
 * neither reported by the receiver nor known lost (PROTOCOL.md 7.3).
 *
 * Without a bound, a sender fills every buffer between it and the line: the
 * tty, a USB adapter, a pty's tens of KiB. A frame sent again then waits
 * behind all of them; meanwhile the unacknowledged window fills with frames
 * the receiver holds behind the gap, and the line idles. (An upload at 115200
 * baud, bit-error rate 1e-5, 0.1 % of bytes dropped: 0.54 of the line without
 * the bound, 0.71 with it, against 0.74 for the best fixed frame size.)
 *
 * The bound is twice the line's bandwidth-delay product, as BBR keeps it
 * (a congestion window gain of 2), and what the line carries while the
 * receiver holds its report (an ACK may wait ACK_DELAY_MS, PROTOCOL.md 7.2).
 * The factors come from the frames themselves, never from the nominal rate,
 * since a pty or a USB gadget runs faster than its baud:
 *
 *   rate    the highest delivery rate sampled: the bytes reported arrived
 *           during one frame's round trip, over that round trip
 *   minRtt  the least round trip sampled
 *   bound   max(floor, rate × (2 × minRtt + ACK_DELAY_MS))
 *
 * The floor is a few frames, the caller's. While the bound holds the sender
 * back, a frame's round trip delivers about the bound, so the bound grows
 * each round trip until the line is full and its queue grows. The delay term
 * is what lets it grow on a fast line: there the least round trip (from a
 * report sent at once, after a PING say) is far shorter than the time between
 * the receiver's delayed ACKs, and twice the product alone came to less than
 * a round delivered. The bound then shrank to the floor and stayed: a clean
 * line with no rate limit carried 4 frames per ACK delay (216 KB/s).
 *
 * The rate fades by FADE per sample, so the bound follows a line that slows
 * down. The least round trip cannot fade: with twice the product in flight
 * every frame waits behind one product of queue, and a fading minimum would
 * take that queue for the line and grow the bound without end. So, as BBR
 * does, when no round trip has come down to the least one for
 * MIN_RTT_WINDOW_MS, the bound falls to the floor (a probe), the queue
 * drains, and the first frame written after that measures the line afresh: a
 * line that became slower to answer (a busy board) is not held to a round
 * trip it no longer has.
 */

import { ACK_DELAY_MS } from './acknowledger';

/** How much the rate estimate gives way per sample. */
const FADE = 1 / 64;
/** The bound's gain over one bandwidth-delay product. */
const GAIN = 2;
/** The least round trip stands this long without a sample as low before it is measured again. */
export const MIN_RTT_WINDOW_MS = 10_000;

export class InFlightLimit {
  /** Bytes per ms; 0 before the first sample. */
  private rate = 0;
  private minRttMs = Infinity;
  private minRttAt = 0;
  /** While a probe runs: the frames written from then on measure the least round trip. */
  private probeFrom: number | null = null;

  /**
   * A frame sent once, written at `writtenAt` (ms), was first reported at
   * `now`, and `deliveredBytes` were reported arrived meanwhile (its own included).
   */
  sample(writtenAt: number, now: number, deliveredBytes: number): void {
    const rtt = Math.max(now - writtenAt, 0.1);
    this.rate = Math.max(deliveredBytes / rtt, this.rate * (1 - FADE));
    if (this.probeFrom !== null) {
      if (writtenAt < this.probeFrom) return;
      this.probeFrom = null;
      this.minRttMs = rtt;
      this.minRttAt = now;
    } else if (rtt <= this.minRttMs) {
      this.minRttMs = rtt;
      this.minRttAt = now;
    } else if (now - this.minRttAt > MIN_RTT_WINDOW_MS) {
      // Frames written within a round trip from now still queue behind what is in flight.
      this.probeFrom = now + rtt;
    }
  }

  /** How long `bytes` take on the line at the highest rate measured; 0 before any sample. */
  lineMs(bytes: number): number {
    return this.rate > 0 ? bytes / this.rate : 0;
  }

  /** The bytes that may be in flight now, at least `floor`. */
  bytes(floor: number): number {
    if (this.rate === 0 || this.probeFrom !== null) return floor;
    return Math.max(floor, this.rate * (GAIN * this.minRttMs + ACK_DELAY_MS));
  }
}
