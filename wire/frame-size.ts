/**
 * Adaptive frame size (PROTOCOL.md 7.3): on a noisy line a long frame is lost
 * more often than a short one, and each frame carries a fixed overhead. The
 * sender estimates the line's loss per byte from its own frames — those
 * acknowledged at the first try, and those lost — and picks the body size
 * whose expected payload per byte of line is largest:
 *
 *   efficiency(s) = payload(s) / wire(s) × (1 − p)^wire(s)
 *
 * between MIN_FRAME_BODY and max_frame. A clean line keeps max_frame; the
 * estimate forgets old frames, so frames grow back when the noise goes.
 * The receiver needs nothing: any body up to max_frame is fine.
 */
import { cobsMaxEncodedLength } from './cobs';
import { TRAILER_BYTES } from './framing';
import { PAYLOAD_HEAD_BYTES } from './messages';

/** The smallest body a sender shrinks its frames to. */
export const MIN_FRAME_BODY = 64;
/** Each new observation weighs this much of the estimate: it covers the last few hundred frames. */
const FORGET = 1 / 256;
/** Sizes tried: powers of two and their midpoints from MIN_FRAME_BODY up, and max_frame. */
const STEPS = [64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096];
/** A new size must do this much better than the current one (1 %): sizes do not flap on small changes. */
const HYSTERESIS = 1.01;

/** Bytes a frame with a body of `body` bytes takes on the line. */
export function wireBytes(body: number): number {
  return cobsMaxEncodedLength(body + TRAILER_BYTES) + 1;
}

function efficiency(body: number, lossPerByte: number): number {
  const wire = wireBytes(body);
  return (Math.max(0, body - PAYLOAD_HEAD_BYTES) / wire) * Math.exp(-lossPerByte * wire);
}

export class FrameSizer {
  /** Frames lost and line bytes sent, both fading (FORGET per frame). */
  private lost = 0;
  private bytes = 0;
  private current: number;
  private readonly sizes: number[];

  constructor(maxBody: number) {
    this.current = maxBody;
    this.sizes = [...STEPS.filter((s) => s < maxBody), maxBody];
  }

  /** The largest body to send now. */
  get size(): number {
    return this.current;
  }

  /** The estimated chance that one byte on the line is lost or damaged. */
  get lossPerByte(): number {
    return this.bytes > 0 ? this.lost / this.bytes : 0;
  }

  /** A frame of `wire` bytes arrived at its first try. */
  delivered(wire: number): void {
    this.observe(wire, 0);
  }

  /** A frame of `wire` bytes was lost (or damaged). */
  lostFrame(wire: number): void {
    this.observe(wire, 1);
  }

  private observe(wire: number, lost: number): void {
    this.lost = this.lost * (1 - FORGET) + lost;
    this.bytes = this.bytes * (1 - FORGET) + wire;
    const p = this.lossPerByte;
    let best = this.current;
    let bestEfficiency = efficiency(this.current, p) * HYSTERESIS;
    for (const size of this.sizes) {
      const e = efficiency(size, p);
      if (e > bestEfficiency) {
        best = size;
        bestEfficiency = e;
      }
    }
    this.current = best;
  }
}
