/**
 * A session carries sequenced messages over a link once the handshake is
 * done. Each direction numbers its sequenced frames from the number agreed in
 * the handshake; the receiver acknowledges cumulatively (ACK n: all below n
 * arrived), and the sender keeps every unacknowledged frame so that it can
 * send it again: after a NAK on a lossy line, or on a new link when a session
 * resumes. Keepalive pings find a dead peer on links that never report one.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { TetherError, errorName } from './errors';
import type { Link } from './link';
import { printable } from './printable';
import { type Message, MsgType, type OutgoingMessage, decodeMessage, encodeMessage } from './messages';
import { encodeFrame } from './framing';
import { Compressor, Decompressor } from './compression';

export interface SessionOptions {
  /** Largest frame body either side may send. */
  maxBody: number;
  /** Seconds between pings; the peer is dead after three intervals without a frame from it. */
  keepalive: number;
  /** Compress sequenced bodies (the deflate capability was negotiated). */
  deflate?: boolean;
  /** The next sequence number the peer expects from us, and we from it. */
  sendSeq?: number;
  recvSeq?: number;
  /**
   * The resume capability was negotiated: when the link drops the session
   * detaches instead of closing, keeps its unacknowledged frames and queue,
   * and can go on over a new link (resume()).
   */
  resumable?: boolean;
}

/** Acknowledge at the latest after this many frames, bytes or milliseconds. */
const ACK_EVERY_FRAMES = 32;
const ACK_EVERY_BYTES = 32 * 1024;
const ACK_DELAY_MS = 10;
/** Largest message, fragmented or not; output and file data never come near it. */
const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Room for a FRAGMENT's type, flag and length head. */
const FRAGMENT_HEAD_BYTES = 8;
/** Least wait, after a frame has left the line, for its ACK before a lossy link sends it again. */
const MIN_ACK_WAIT_MS = 200;
/** Least time before the receiver repeats a NAK for the same frame. */
const MIN_NAK_REPEAT_MS = 50;
/** Longest wait for an ACK, however often the wait has been doubled. */
const MAX_ACK_WAIT_MS = 10_000;
/** Each timeout doubles the wait (as TCP's), up to this factor, until an ACK makes progress. */
const MAX_BACKOFF = 16;
/** Bytes handed to a fast stream and not yet flushed before the session queues instead. */
const FAST_LINK_BUFFER = 256 * 1024;

interface Unacked {
  seq: number;
  frame: Buffer;
  /** When its last byte leaves the line (performance.now() ms), estimated from the line rate when it was written. */
  leavesAt: number;
  /** Written more than once: its ACK says nothing about the turnaround (Karn's rule). */
  resent: boolean;
}

/** A message waiting for the link; output to the same stream and channel merges while it waits. */
type Queued = { body: Buffer } | { output: Extract<OutgoingMessage, { type: 'output' }> };

export class Session extends EventEmitter {
  private link: Link;
  private sendSeq: number;
  private readonly queue: Queued[] = [];
  private readonly unacked: Unacked[] = [];
  private unackedBytes = 0;
  /** Bytes written to the stream whose write callback has not run yet. */
  private buffered = 0;
  private pendingAckFrames = 0;
  private pendingAckBytes = 0;
  private ackTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private retransmitTimer: NodeJS.Timeout | null = null;
  private lastHeard = Date.now();
  private pingToken = 0;
  /** The last NAK sent, and the offset of the last frame after the lost one seen since (0: none). */
  private lastNak = { seq: -1, at: 0, offset: 0 };
  /** When the bytes written so far will have left the line (performance.now() ms), on a link of known rate. */
  private lineFreeAt = 0;
  /**
   * Lossy links: the time from a frame leaving the line to its ACK arriving
   * (the peer's ack delay and the way back), smoothed as TCP smooths its
   * round trip (RFC 6298); null until the first ACK of a frame sent once.
   */
  private turnaround: { mean: number; deviation: number } | null = null;
  private backoff = 1;
  /** Lossy links: bytes allowed in flight, halved on each loss and grown by each ack (AIMD). */
  private window = Infinity;
  /** After a go-back: the next unacknowledged frame to send again, and the bytes resent since. */
  private resendSeq: number | null = null;
  private resentBytes = 0;
  private closed = false;
  private attached = true;
  private fragments: Buffer[] = [];
  private fragmentBytes = 0;
  private readonly compressor: Compressor | null;
  private readonly decompressor: Decompressor | null;
  readonly maxBody: number;

  constructor(link: Link, readonly options: SessionOptions) {
    super();
    this.maxBody = options.maxBody;
    this.sendSeq = options.sendSeq ?? 0;
    // A slow line is worth the smallest output; on a fast link deflate's speed matters more.
    this.compressor = options.deflate ? new Compressor(link.lossy ? 6 : 1) : null;
    this.decompressor = options.deflate ? new Decompressor(options.maxBody) : null;
    this.link = link;
    this.window = this.inflightLimit;
    link.expectedSeq = options.recvSeq ?? 0;
    this.listen(link);
    this.startKeepalive();
    // Frames that came in the same read as the handshake's last message wait until the
    // owner, in the same tick as this constructor, has subscribed to 'message'.
    queueMicrotask(() => link.deliverBacklog());
  }

  private startKeepalive(): void {
    const interval = Math.max(50, this.options.keepalive * 1000);
    this.lastHeard = Date.now();
    this.keepaliveTimer = setInterval(() => this.keepaliveTick(interval), interval);
    this.keepaliveTimer.unref();
  }

  /** False while a resumable session waits for a new link. */
  get isAttached(): boolean {
    return this.attached && !this.closed;
  }

  /** The next sequence number this side expects from the peer (sent in a resuming handshake). */
  get nextRecvSeq(): number {
    return this.link.expectedSeq;
  }

  /**
   * Goes on over a new link after a resuming handshake: frames the peer
   * already has are dropped, the rest are sent again, then the queue.
   */
  resume(link: Link, peerNextSeq: number): void {
    if (this.closed) throw new TetherError('SESSION_EXPIRED', 'the session has ended');
    link.expectedSeq = this.link.expectedSeq;
    this.link = link;
    this.attached = true;
    this.buffered = 0;
    this.listen(link);
    this.onAck(peerNextSeq);
    this.window = this.inflightLimit;
    this.lineFreeAt = 0;
    this.backoff = 1;
    this.resendSeq = this.unacked.length > 0 ? this.unacked[0].seq : null;
    this.resentBytes = 0;
    this.startKeepalive();
    link.deliverBacklog();
    this.flush();
    this.emit('attached');
  }

  /** The link is gone but the session may resume: keep everything, stop the timers. */
  private detach(error: Error | null): void {
    this.attached = false;
    for (const timer of [this.ackTimer, this.retransmitTimer]) if (timer) clearTimeout(timer);
    this.ackTimer = this.retransmitTimer = null;
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
    this.pendingAckFrames = this.pendingAckBytes = 0;
    this.emit('detached', error);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes of sent frames not yet acknowledged by the peer. */
  get unackedByteCount(): number {
    return this.unackedBytes;
  }

  /** Messages waiting for the link. */
  get queuedCount(): number {
    return this.queue.length;
  }

  get stats() {
    return this.link.stats;
  }

  /** Line time in ms for `bytes` on a link of known rate (0 for fast links). */
  private lineMs(bytes: number): number {
    const rate = this.link.bytesPerSecond;
    return rate ? (bytes * 1000) / rate : 0;
  }

  /** How much may sit in the stream's buffer: a few frames on a slow line, so waiting output can merge. */
  private get bufferLimit(): number {
    const rate = this.link.bytesPerSecond;
    return rate ? Math.max(2 * this.maxBody, rate / 50) : FAST_LINK_BUFFER;
  }

  /**
   * On lossy links, unacknowledged bytes are capped so that a go-back costs
   * little. The peer caps its own the same way (the reference's rule in
   * PROTOCOL.md 7.3), so this is also how much of its data an ACK from it
   * may queue behind.
   */
  private get inflightLimit(): number {
    const rate = this.link.bytesPerSecond;
    return this.link.lossy ? Math.max(4 * this.maxBody, (rate ?? 0) * 0.3) : Infinity;
  }

  private listen(link: Link): void {
    link.on('frame', (body: Buffer, sequenced: boolean) => this.onFrame(body, sequenced));
    link.on('corrupt', () => this.nak(0));
    link.on('duplicate', () => this.onDuplicate());
    link.on('ahead', (offset: number) => this.nak(offset));
    link.once('close', (error: Error | null) => {
      if (link !== this.link || this.closed) return;
      const why = error ?? new TetherError('PEER_TIMEOUT', 'the connection closed');
      if (this.options.resumable && !(why instanceof TetherError && why.fromPeer)) this.detach(why);
      else this.finish(why);
    });
  }

  /**
   * Queues a sequenced message and sends what the link takes now. Throws
   * FRAME_TOO_LARGE if it cannot fit in a frame. Output chunks for the same
   * stream and channel that wait behind a busy link merge into one frame.
   */
  send(message: OutgoingMessage): void {
    if (this.closed) return;
    if (message.type === 'output') {
      if (message.data.length + 16 > this.maxBody) this.tooLarge(message.data.length + 16);
      const last = this.queue[this.queue.length - 1];
      if (
        last && 'output' in last && last.output.stream === message.stream && last.output.channel === message.channel &&
        last.output.data.length + message.data.length + 16 <= this.maxBody
      ) {
        last.output = { ...last.output, data: Buffer.concat([last.output.data, message.data]) };
      } else {
        this.queue.push({ output: message });
      }
    } else {
      const body = encodeMessage(message);
      if (body.length > MAX_MESSAGE_BYTES) this.tooLarge(body.length);
      if (body.length <= this.maxBody) this.queue.push({ body });
      else this.queueFragments(body);
    }
    this.flush();
  }

  /** A message larger than a frame (a big START on a serial line) goes in FRAGMENT pieces. */
  private queueFragments(body: Buffer): void {
    const piece = this.maxBody - FRAGMENT_HEAD_BYTES;
    for (let at = 0; at < body.length; at += piece) {
      const data = body.subarray(at, at + piece);
      this.queue.push({ body: encodeMessage({ type: MsgType.FRAGMENT, more: at + piece < body.length, data }) });
    }
  }

  private tooLarge(size: number): never {
    throw new TetherError('FRAME_TOO_LARGE', `a ${size}-byte message exceeds the ${this.maxBody}-byte frame limit`);
  }

  /** Collects FRAGMENT pieces; returns the whole body once the last piece is in. */
  private reassemble(piece: { more: boolean; data: Buffer }): Buffer | null {
    this.fragments.push(piece.data);
    this.fragmentBytes += piece.data.length;
    if (this.fragmentBytes > MAX_MESSAGE_BYTES) {
      this.fragments = [];
      this.fragmentBytes = 0;
      throw new TetherError('FRAME_TOO_LARGE', `a fragmented message exceeds ${MAX_MESSAGE_BYTES} bytes`);
    }
    if (piece.more) return null;
    const body = Buffer.concat(this.fragments);
    this.fragments = [];
    this.fragmentBytes = 0;
    return body;
  }

  /** Writes retransmissions, then queued messages, while the stream's buffer and the in-flight window allow. */
  private flush(): void {
    if (!this.attached) return;
    while (this.resendSeq !== null && !this.closed && this.buffered < this.bufferLimit && this.resentBytes < this.window) {
      const entry = this.unacked[this.resendSeq - (this.unacked[0]?.seq ?? this.resendSeq)];
      if (!entry) {
        this.resendSeq = null;
        break;
      }
      this.resentBytes += entry.frame.length;
      this.resendSeq = entry.seq + 1;
      entry.leavesAt = this.write(entry.frame);
      entry.resent = true;
    }
    if (this.resendSeq !== null && this.resendSeq >= this.sendSeq) this.resendSeq = null;
    while (this.resendSeq === null && this.queue.length > 0 && !this.closed && this.buffered < this.bufferLimit && this.unackedBytes < this.window) {
      const item = this.queue.shift()!;
      let body = 'body' in item ? item.body : encodeMessage(item.output);
      if (this.compressor) body = this.compressor.pack(body);
      const seq = this.sendSeq++;
      const frame = encodeFrame(body, seq);
      // Kept before it is written: a write to a closed link calls back (and flushes) at once.
      const entry: Unacked = { seq, frame, leavesAt: 0, resent: false };
      this.unacked.push(entry);
      this.unackedBytes += frame.length;
      entry.leavesAt = this.write(frame);
    }
    if (this.link.lossy && this.unacked.length > 0) this.armRetransmit();
  }

  /** Writes a sequenced frame; returns when it will have left the line. */
  private write(frame: Buffer): number {
    const link = this.link;
    this.buffered += frame.length;
    link.writeRaw(frame, () => {
      if (link !== this.link) return;
      this.buffered -= frame.length;
      if (this.queue.length > 0 || this.resendSeq !== null) this.flush();
    });
    return this.queueOnLine(frame.length);
  }

  /** Sends a link message (ack, ping, error): not sequenced, never retransmitted. */
  private sendLink(message: OutgoingMessage): void {
    if (!this.attached) return;
    const frame = encodeFrame(encodeMessage(message), null);
    this.link.writeRaw(frame);
    this.queueOnLine(frame.length);
  }

  /** Bytes written now leave the line after everything written before them: returns when. */
  private queueOnLine(bytes: number): number {
    this.lineFreeAt = Math.max(performance.now(), this.lineFreeAt) + this.lineMs(bytes);
    return this.lineFreeAt;
  }

  private onFrame(frameBody: Buffer, sequenced: boolean): void {
    this.lastHeard = Date.now();
    let body = frameBody;
    if (sequenced) {
      this.link.expectedSeq++;
      this.pendingAckFrames++;
      this.pendingAckBytes += body.length;
      this.scheduleAck();
      if (this.decompressor) {
        try {
          body = this.decompressor.unpack(frameBody);
        } catch (error) {
          // The two histories no longer agree: nothing after this can be read.
          this.close(error as TetherError);
          return;
        }
      }
    }
    let message: Message;
    try {
      message = decodeMessage(body);
      if (sequenced && message.type === MsgType.FRAGMENT) {
        const whole = this.reassemble(message);
        if (!whole) {
          this.emit('fragment');
          return;
        }
        message = decodeMessage(whole);
      } else if (sequenced && this.fragments.length > 0) {
        // The pieces of one message are sent in a row: anything else between them is a broken sender.
        this.fragments = [];
        this.fragmentBytes = 0;
        throw new TetherError('BAD_MESSAGE', 'a message arrived between the fragments of another');
      }
    } catch (error) {
      // The frame passed its CRC, so this is the peer's mistake, not noise: say so and go on.
      const e = error instanceof TetherError ? error : new TetherError('BAD_MESSAGE', String(error));
      if (sequenced) this.send({ type: MsgType.REJECT, stream: null, code: e.wireCode, message: e.message });
      this.emit('rejected', e);
      return;
    }
    if (!sequenced) {
      this.onLinkMessage(message);
      return;
    }
    try {
      this.emit('message', message);
    } catch (error) {
      // A message the peer should not have sent: overrunning its credit ends the session,
      // anything else gets a REJECT and the session goes on.
      const e = error instanceof TetherError ? error : new TetherError('INTERNAL', String(error));
      if (e.code === 'FLOW_CONTROL') this.close(e);
      else this.send({ type: MsgType.REJECT, stream: 'stream' in message ? (message.stream as number) : null, code: e.wireCode, message: e.message });
    }
  }

  private onLinkMessage(message: Message): void {
    switch (message.type) {
      case MsgType.ACK:
        this.onAck(message.nextSeq);
        return;
      case MsgType.NAK:
        this.onNak(message.nextSeq);
        return;
      case MsgType.PING:
        this.sendLink({ type: MsgType.PONG, token: message.token });
        this.flushAck();
        return;
      case MsgType.PONG:
        return;
      case MsgType.ERROR:
        this.finish(new TetherError(errorName(message.code) ?? 'INTERNAL', `peer closed the session: ${printable(message.message)}`));
        return;
      default:
        // A handshake message inside a session is a confused peer; it changes nothing.
        this.emit('rejected', new TetherError('BAD_MESSAGE', `handshake message ${String(message.type)} inside a session`));
    }
  }

  /**
   * On a lossy link, a frame failed: ask at once for the one expected next.
   * The frames already on the line behind a lost one fail too (`offset`: how
   * far after it each is), and need not each send a NAK: again for the same
   * frame only when the peer has evidently sent it again (a frame after it
   * comes with a smaller offset than the last: a new round of go-back-N), or
   * after a few frames' time (in case the NAK was lost). The peer ignores
   * NAKs that come before its new copy can have arrived.
   */
  private nak(offset: number): void {
    if (!this.link.lossy || this.closed) return;
    const now = Date.now();
    const seq = this.link.expectedSeq;
    const last = this.lastNak;
    const newRound = offset > 0 && last.offset > 0 && offset <= last.offset;
    if (last.seq === seq && !newRound && now - last.at < this.nakRepeatMs()) {
      if (offset > 0) last.offset = offset;
      return;
    }
    this.lastNak = { seq, at: now, offset };
    this.sendLink({ type: MsgType.NAK, nextSeq: seq });
  }

  /**
   * A copy of a frame that already arrived: the peer went back because our
   * ACK was late or lost. No NAK (that would send it back further); the ACK
   * is repeated instead, counted like a frame received.
   */
  private onDuplicate(): void {
    if (this.closed) return;
    this.pendingAckFrames++;
    this.scheduleAck();
  }

  private onAck(nextSeq: number): void {
    let newest: Unacked | null = null;
    while (this.unacked.length > 0 && this.unacked[0].seq < nextSeq) {
      newest = this.unacked.shift()!;
      this.unackedBytes -= newest.frame.length;
      this.resentBytes = Math.max(0, this.resentBytes - newest.frame.length);
    }
    if (this.resendSeq !== null && this.resendSeq < nextSeq) this.resendSeq = this.unacked.length > 0 ? nextSeq : null;
    if (!newest) return;
    if (this.link.lossy && !newest.resent) this.measureTurnaround(Math.max(0, performance.now() - newest.leavesAt));
    this.backoff = 1;
    this.window = Math.min(this.inflightLimit, this.window + this.maxBody);
    this.clearRetransmit();
    this.flush();
    if (this.link.lossy && this.unacked.length > 0) this.armRetransmit();
  }

  private measureTurnaround(ms: number): void {
    const t = this.turnaround;
    if (!t) {
      this.turnaround = { mean: ms, deviation: ms / 2 };
      return;
    }
    t.deviation += (Math.abs(ms - t.mean) - t.deviation) / 4;
    t.mean += (ms - t.mean) / 8;
  }

  /**
   * How long after a frame has left the line its ACK may take: the measured
   * turnaround with room for jitter, and at least the line time of a full
   * in-flight window from the peer (which its ACK may queue behind) plus a
   * margin; doubled after each timeout. Damage is answered by a NAK at once:
   * this timeout only recovers a lost tail or a lost NAK, so it can be patient.
   */
  private ackWaitMs(): number {
    const floor = Math.max(MIN_ACK_WAIT_MS, this.nakRepeatMs()) + this.lineMs(this.inflightLimit);
    const measured = this.turnaround ? this.turnaround.mean + 4 * this.turnaround.deviation : 0;
    return Math.min(MAX_ACK_WAIT_MS, this.backoff * Math.max(floor, measured));
  }

  /** Least time between two NAKs for the same frame: a few frames' line time, and an ACK delay. */
  private nakRepeatMs(): number {
    return Math.max(MIN_NAK_REPEAT_MS, 4 * this.lineMs(this.maxBody)) + ACK_DELAY_MS;
  }

  /** NAK n: everything below n arrived, n did not. Go back to it, unless this NAK is about an older copy of it. */
  private onNak(seq: number): void {
    this.onAck(seq);
    const first = this.unacked[0];
    if (!first || first.seq !== seq) return;
    // A copy of n is still to be written, or the one sent again has not left the line yet:
    // the peer asked before it could have seen it.
    if (this.resendSeq !== null && this.resendSeq <= seq) return;
    if (first.resent && performance.now() < first.leavesAt) return;
    this.goBack(seq);
  }

  /** Go-back-N: sends every unacknowledged frame from `seq` again, and halves the in-flight window. */
  private goBack(seq: number): void {
    this.window = Math.max(2 * this.maxBody, this.window / 2);
    if (this.unacked.length === 0 || seq >= this.sendSeq) return;
    this.resendSeq = Math.max(seq, this.unacked[0].seq);
    this.resentBytes = 0;
    this.clearRetransmit();
    this.flush();
  }

  /**
   * Times the oldest unacknowledged frame: once it has left the line and its
   * ACK has had time to come back, the sender goes back to it. Its deadline
   * moves when it is written again, so the timer checks before going back.
   */
  private armRetransmit(): void {
    if (this.retransmitTimer || this.closed || !this.attached || this.unacked.length === 0) return;
    const oldest = this.unacked[0];
    const deadline = () => oldest.leavesAt + this.ackWaitMs();
    this.retransmitTimer = setTimeout(() => {
      this.retransmitTimer = null;
      if (this.unacked[0] !== oldest || performance.now() < deadline()) {
        this.armRetransmit();
        return;
      }
      this.backoff = Math.min(MAX_BACKOFF, 2 * this.backoff);
      this.goBack(oldest.seq);
    }, Math.max(1, deadline() - performance.now()));
    this.retransmitTimer.unref();
  }

  private clearRetransmit(): void {
    if (this.retransmitTimer) clearTimeout(this.retransmitTimer);
    this.retransmitTimer = null;
  }

  private scheduleAck(): void {
    if (this.pendingAckFrames >= ACK_EVERY_FRAMES || this.pendingAckBytes >= ACK_EVERY_BYTES) {
      this.flushAck();
      return;
    }
    if (!this.ackTimer) {
      this.ackTimer = setTimeout(() => this.flushAck(), ACK_DELAY_MS);
      this.ackTimer.unref();
    }
  }

  private flushAck(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.pendingAckFrames === 0 || this.closed) return;
    this.pendingAckFrames = 0;
    this.pendingAckBytes = 0;
    this.sendLink({ type: MsgType.ACK, nextSeq: this.link.expectedSeq });
  }

  private keepaliveTick(interval: number): void {
    if (Date.now() - this.lastHeard > 3 * interval) {
      const error = new TetherError('PEER_TIMEOUT', `no frame from the peer for ${Math.round((3 * interval) / 1000)} s`);
      // A resumable session only loses this link; the close event detaches it.
      if (this.options.resumable) this.link.close(error);
      else this.close(error);
      return;
    }
    this.sendLink({ type: MsgType.PING, token: this.pingToken++ % 0x10000 });
  }

  /** Ends the session: tells the peer why (if there is an error), then closes the link. */
  close(error: TetherError | null = null): void {
    if (this.closed) return;
    if (error) this.sendLink({ type: MsgType.ERROR, code: error.wireCode, message: error.message });
    this.attached = false;
    this.finish(error);
  }

  private finish(error: Error | null): void {
    if (this.closed) return;
    if (this.attached) this.flushAck();
    this.closed = true;
    for (const timer of [this.ackTimer, this.retransmitTimer]) if (timer) clearTimeout(timer);
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.link.close();
    this.emit('close', error);
  }
}
