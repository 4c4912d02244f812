/**
 * The receiving side of sequenced delivery: the sequence number expected
 * next, and, with selective repeat, the frames that arrived after a lost one,
 * held until the gap is filled so that only the lost frame is sent again.
 * Messages still come out strictly in sequence order. What is held is bounded
 * in frames and in bytes (PROTOCOL.md 7.3); a frame beyond either is dropped
 * and will come again.
 */

/** How far past the expected number a frame may be held (the ACK's bitmap covers this many). */
export const HOLD_SPAN = 1024;
/** Most bytes of bodies held out of order. */
export const HOLD_BYTES = 2 * 1024 * 1024;

export type Arrival =
  /** The frame expected: it and any held frames it unblocks are delivered. */
  | 'next'
  /** A copy of a frame already received (sent again because an ACK was late or lost). */
  | 'duplicate'
  /** Ahead of a gap, kept (selective repeat). */
  | 'held'
  /** Ahead of a gap and not kept (go-back-N, or beyond the bounds). */
  | 'dropped';

export class ReceiveWindow {
  private readonly held = new Map<number, Buffer>();
  private heldBytes = 0;

  constructor(
    /** The sequence number expected next. */
    public expected: number,
    /** Frames after a gap are held (selective repeat was negotiated). */
    readonly selective: boolean,
  ) {}

  /** Frames held out of order. */
  get holding(): number {
    return this.held.size;
  }

  get holdingBytes(): number {
    return this.heldBytes;
  }

  /** Takes sequenced frame `seq`; `deliver` gets every body now in order. */
  take(seq: number, body: Buffer, deliver: (body: Buffer) => void): Arrival {
    if (seq < this.expected || this.held.has(seq)) return 'duplicate';
    if (seq > this.expected) {
      if (!this.selective || seq - this.expected > HOLD_SPAN || this.heldBytes + body.length > HOLD_BYTES) return 'dropped';
      this.held.set(seq, body);
      this.heldBytes += body.length;
      return 'held';
    }
    this.expected++;
    deliver(body);
    for (let next = this.held.get(this.expected); next !== undefined; next = this.held.get(this.expected)) {
      this.held.delete(this.expected);
      this.heldBytes -= next.length;
      this.expected++;
      deliver(next);
    }
    return 'next';
  }

  /** The ACK's bitmap: bit i (byte i / 8, bit i % 8) set when frame expected + 1 + i is held; undefined when none is. */
  received(): Buffer | undefined {
    if (this.held.size === 0) return undefined;
    let highest = 0;
    for (const seq of this.held.keys()) highest = Math.max(highest, seq - this.expected - 1);
    const bitmap = Buffer.alloc((highest >> 3) + 1);
    for (const seq of this.held.keys()) {
      const bit = seq - this.expected - 1;
      bitmap[bit >> 3] |= 1 << (bit & 7);
    }
    return bitmap;
  }
}
