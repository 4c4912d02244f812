/**
 * The sending side of sequenced delivery: every frame sent and not yet
 * acknowledged, which of them must go again, and how long to wait for an ACK.
 *
 * Lines and sockets deliver in the order frames were written, so when the
 * peer reports a frame received, every frame written before it that it has
 * not received was lost: it goes again at once (PROTOCOL.md 7.3). Each frame
 * remembers the place of its last transmission (`order`) for this. The
 * retransmission timeout comes from round trips measured on the line itself
 * (RFC 6298), never from its nominal rate alone: it only recovers a lost tail.
 * It also counts the bytes in flight, whose fate is not known yet, for the
 * bound a lossy link keeps on them (in-flight.ts).
 */

/** Written, and neither reported arrived, acknowledged, nor known lost. */
function inFlight(entry: SentFrame): boolean {
  return entry.sends > 0 && !entry.held && !entry.queued && !entry.acked;
}

export interface SentFrame {
  readonly seq: number;
  /**
   * The frame as written. Its body is not kept beside it: a resumed session
   * reads the body back from the frame (framing.ts bodyOfFrame) to tag it with
   * the new link's keys, so an unacknowledged byte is held once, not twice.
   */
  frame: Buffer;
  /** Transmissions so far. */
  sends: number;
  /** Place of its last transmission among every sequenced frame written, and of its first. */
  order: number;
  firstOrder: number;
  /** When its last transmission was taken by the stream (performance.now() ms); null until then. */
  writtenAt: number | null;
  /** The window's bytes reported arrived when it was taken by the stream. */
  deliveredAtWrite: number;
  /** The receiver holds it, out of order (selective repeat). */
  held: boolean;
  /** Waits to be sent again. */
  queued: boolean;
  /** Acknowledged: gone from the window. */
  acked: boolean;
}

/** Round-trip estimate as TCP keeps it (RFC 6298): smoothed mean and deviation, in ms. */
export class RoundTrip {
  private mean: number | null = null;
  private deviation = 0;

  constructor(private readonly initialMs: number, private readonly minMs: number) {}

  get measured(): boolean {
    return this.mean !== null;
  }

  get smoothedMs(): number {
    return this.mean ?? this.initialMs;
  }

  sample(ms: number): void {
    if (this.mean === null) {
      this.mean = ms;
      this.deviation = ms / 2;
      return;
    }
    this.deviation += (Math.abs(ms - this.mean) - this.deviation) / 4;
    this.mean += (ms - this.mean) / 8;
  }

  /**
   * How long to wait for an ACK after a frame was taken by the stream: the
   * mean and at least `minMs` more. (A deviation near 0, as a steady line
   * gives, would leave no room for an ACK a little late: each frame would go
   * twice, and a frame sent twice is never timed, so the estimate would
   * never learn.)
   */
  get timeoutMs(): number {
    return this.mean === null ? this.initialMs : this.mean + Math.max(this.minMs, 4 * this.deviation);
  }
}

/** Who learns the fate of each frame at its first try (the frame sizer): arrived, or lost. */
export interface FrameFates {
  delivered(wireBytes: number): void;
  lostFrame(wireBytes: number): void;
}

/**
 * Who learns, per report, the round trip of the newest frame sent once that it
 * reports (written at `writtenAt`, reported at `now`) and the bytes reported
 * arrived during it (in-flight.ts).
 */
export interface DeliverySamples {
  sample(writtenAt: number, now: number, deliveredBytes: number): void;
}

export class SendWindow {
  private frames: SentFrame[] = [];
  private resends: SentFrame[] = [];
  private resendsSorted = true;
  private orders = 0;
  /** The latest transmission known to have arrived. */
  private deliveredOrder = 0;
  /** Wire bytes of the frames not yet acknowledged. */
  bytes = 0;
  /** Wire bytes of the frames in flight. */
  inFlightBytes = 0;
  /** Wire bytes of every frame reported arrived, counted once each. */
  private deliveredBytes = 0;

  constructor(
    readonly roundTrip: RoundTrip,
    private readonly fates: FrameFates | null = null,
    private readonly samples: DeliverySamples | null = null,
  ) {}

  get count(): number {
    return this.frames.length;
  }

  get first(): SentFrame | undefined {
    return this.frames[0];
  }

  /** A new frame, kept until acknowledged. */
  add(seq: number, frame: Buffer): SentFrame {
    const entry: SentFrame = {
      seq, frame, sends: 0, order: 0, firstOrder: 0, writtenAt: null, deliveredAtWrite: 0, held: false, queued: false, acked: false,
    };
    this.frames.push(entry);
    this.bytes += frame.length;
    return entry;
  }

  /** A frame is being written (first time or again). */
  sending(entry: SentFrame): void {
    if (!inFlight(entry)) this.inFlightBytes += entry.frame.length;
    entry.sends++;
    entry.order = ++this.orders;
    if (entry.sends === 1) entry.firstOrder = entry.order;
    entry.writtenAt = null;
    entry.queued = false;
  }

  /** The stream took the frame's latest transmission: its round trip starts now. */
  taken(entry: SentFrame, now: number): void {
    entry.writtenAt = now;
    entry.deliveredAtWrite = this.deliveredBytes;
  }

  /** Called before `entry` is reported, acknowledged or queued again: it is no longer in flight. */
  private landed(entry: SentFrame): void {
    if (inFlight(entry)) this.inFlightBytes -= entry.frame.length;
  }

  /**
   * The peer's ACK or NAK: everything below `nextSeq` arrived, and with
   * selective repeat the frames marked in `received`. Returns whether the
   * window moved, and whether a round trip was measured (a frame sent once was reported). Frames written before one that arrived, and missing, go
   * into the queue to be sent again.
   */
  acknowledge(nextSeq: number, received: Buffer | undefined, now: number): { progress: boolean; measured: boolean } {
    let progress = false;
    // The frame this report is the first to report that was written last: its round trip is the freshest.
    let timed: SentFrame | null = null;
    const reported = (entry: SentFrame) => {
      this.delivered(entry);
      if (!timed || entry.order > timed.order) timed = entry;
    };
    while (this.frames.length > 0 && this.frames[0].seq < nextSeq) {
      const entry = this.frames.shift()!;
      this.landed(entry);
      entry.acked = true;
      this.bytes -= entry.frame.length;
      // A frame the receiver held was reported when it arrived: its round trip ended then.
      if (!entry.held) reported(entry);
      progress = true;
    }
    if (received) {
      for (const entry of this.frames) {
        const bit = entry.seq - nextSeq - 1;
        if (bit >= 0 && bit < received.length * 8 && (received[bit >> 3] & (1 << (bit & 7))) !== 0 && !entry.held) {
          this.landed(entry);
          entry.held = true;
          reported(entry);
        }
      }
    }
    const measured = this.sampleRoundTrip(timed, now);
    this.queueLost((entry) => entry.order < this.deliveredOrder);
    return { progress, measured };
  }

  private sampleRoundTrip(entry: SentFrame | null, now: number): boolean {
    // Karn's rule: a frame sent more than once says nothing about the round trip.
    if (!entry || entry.sends !== 1 || entry.writtenAt === null) return false;
    this.roundTrip.sample(Math.max(0, now - entry.writtenAt));
    this.samples?.sample(entry.writtenAt, now, this.deliveredBytes - entry.deliveredAtWrite);
    return true;
  }

  /**
   * A frame arrived, by one of its transmissions: the first is the one to
   * count on, since a report cannot say which (a frame sent again on a
   * timeout may have arrived the first time, and the frames written between
   * the two are still on their way).
   */
  private delivered(entry: SentFrame): void {
    this.deliveredBytes += entry.frame.length;
    if (entry.firstOrder > this.deliveredOrder) this.deliveredOrder = entry.firstOrder;
    if (entry.sends === 1) this.fates?.delivered(entry.frame.length);
  }

  /**
   * Selective repeat's NAK: the peer saw a damaged frame right after what it
   * reported received. On an in-order line that is the first frame written
   * after the last one known to have arrived: it goes again.
   */
  damaged(): void {
    let next: SentFrame | null = null;
    for (const entry of this.frames) {
      if (!entry.held && !entry.queued && entry.order > this.deliveredOrder && entry.writtenAt !== null && (!next || entry.order < next.order)) next = entry;
    }
    if (next) this.lose(next);
  }

  /**
   * Go-back-N's NAK from a peer that keeps nothing out of order: every frame
   * from `seq` on goes again, unless `seq` went again less than a round trip
   * ago (the NAK was sent before that copy could arrive).
   */
  goBack(seq: number, now: number): void {
    const first = this.frames[0];
    if (!first || first.seq !== seq || first.queued) return;
    if (first.sends > 1 && (first.writtenAt === null || now - first.writtenAt < this.roundTrip.smoothedMs)) return;
    this.queueLost(() => true);
  }

  /** No ACK in time: the oldest frame the peer has not reported goes again (go-back-N: all of them). */
  timedOut(goBackN: boolean): void {
    if (goBackN) {
      for (const entry of this.frames) if (!entry.queued && entry.sends > 0) this.queue(entry);
      return;
    }
    // A timeout may as well be a slow ACK as a lost frame: it tells the frame sizer nothing.
    const oldest = this.frames.find((entry) => !entry.held && !entry.queued);
    if (oldest) this.queue(oldest);
  }

  private queueLost(lost: (entry: SentFrame) => boolean): void {
    for (const entry of this.frames) if (!entry.held && !entry.queued && entry.sends > 0 && lost(entry)) this.lose(entry);
  }

  /** A transmission of `entry` was lost: it goes again. */
  private lose(entry: SentFrame): void {
    this.fates?.lostFrame(entry.frame.length);
    this.queue(entry);
  }

  private queue(entry: SentFrame): void {
    this.landed(entry);
    entry.queued = true;
    if (this.resends.length === 0) this.resendsSorted = true;
    else if (this.resends[this.resends.length - 1].seq > entry.seq) this.resendsSorted = false;
    this.resends.push(entry);
  }

  /** Queues every unacknowledged frame again (a resumed session), framed anew by `frame`. */
  resendAll(frame: (entry: SentFrame) => Buffer): void {
    this.resends = [];
    for (const entry of this.frames) {
      this.queue(entry); // before the frame changes: it lands at the length it was sent with
      const old = entry.frame.length;
      entry.frame = frame(entry);
      this.bytes += entry.frame.length - old;
      entry.held = false;
    }
  }

  /** The next frame to send again, oldest first; undefined when none waits. */
  nextResend(): SentFrame | undefined {
    if (!this.resendsSorted) this.resends.sort((a, b) => a.seq - b.seq);
    this.resendsSorted = true;
    for (;;) {
      const entry = this.resends.shift();
      if (!entry || (!entry.acked && entry.queued)) return entry;
    }
  }

  get resendWaiting(): boolean {
    return this.resends.some((entry) => !entry.acked && entry.queued);
  }

  /** The frame whose ACK is awaited longest: the oldest not reported by the peer and not waiting to go again. */
  get awaited(): SentFrame | undefined {
    return this.frames.find((entry) => !entry.held && !entry.queued);
  }
}
