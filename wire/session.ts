/**
 * A session carries sequenced messages over an authenticated link once the
 * handshake is done. It puts together the parts that each do one job:
 *
 *   send-queue.ts        messages waiting for the link (bounded in bytes)
 *   send-window.ts       frames sent and not yet acknowledged; what goes again
 *   retransmit-timer.ts  lossy lines: when an awaited ACK is late
 *   receive-window.ts    the number expected next; frames held out of order
 *   acknowledger.ts      when this side owes the peer an ACK or a NAK
 *   fragments.ts         messages larger than a frame
 *   frame-size.ts        the frame size that carries most through a noisy line
 *   in-flight.ts         lossy links: how much may be on its way at once
 *   compression.ts       the deflate capability
 *
 * and adds what is the session's own: keepalive, link replies while the
 * transport is full, the bounds on what a peer can make it hold, ERROR and
 * close, and resuming over a new link. Everything a peer can fill is bounded
 * in bytes (PROTOCOL.md 7.8); a peer past a bound gets ERROR and the session
 * ends.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { type AckType, Acknowledger } from './acknowledger';
import { type BodyParts, joinBody } from './body-parts';
import { COMPRESSED_MARKER, Compressor, Decompressor, inflatedLimit } from './compression';
import { TetherError, errorName } from './errors';
import { Reassembler } from './fragments';
import { bodyOfFrame } from './framing';
import type { Link } from './link';
import { printable } from './printable';
import { MalformedMessage, type Message, MsgType, type OutgoingMessage, decodeMessage, encodeMessage } from './messages';
import { ReceiveWindow } from './receive-window';
import { MIN_RETRANSMIT_MS, RetransmitTimer } from './retransmit-timer';
import { SendQueue } from './send-queue';
import { RoundTrip, type SentFrame, SendWindow } from './send-window';
import { FrameSizer, wireBytes } from './frame-size';
import { InFlightLimit } from './in-flight';

export interface SessionOptions {
  /** Largest frame body either side may send. */
  maxBody: number;
  /** Seconds between pings; the peer is dead after three intervals without a frame from it. */
  keepalive: number;
  /** Compress sequenced bodies (the deflate capability was negotiated). */
  deflate?: boolean;
  /** Selective repeat was negotiated: frames after a lost one are held, and only the lost one is sent again. */
  selective?: boolean;
  /** The streams' flow-control window: what may wait for the link grows with it. */
  window?: number;
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

/** Lossy links: frames of max_frame that may always be in flight, whatever the measured bound (frames sent again keep the size they had). */
export const IN_FLIGHT_FLOOR_FRAMES = 4;

/** Frames unacknowledged at most: far below 2^15, so that 16 bits of frame number place every one. */
export const MAX_UNACKED_FRAMES = 1024;
/** Bytes of frames unacknowledged at most: on TCP and TLS, and on a lossy line with selective repeat. */
export const MAX_UNACKED_BYTES_RELIABLE = 2 * 1024 * 1024;
export const MAX_UNACKED_BYTES_LOSSY = 64 * 1024;
/**
 * Bytes of messages waiting for the link at most: past this the peer is not
 * acknowledging (FLOW_CONTROL). Payload waits only within its streams' credit,
 * so a working peer never comes near it.
 */
export function maxQueuedBytes(window: number): number {
  return 2 * 1024 * 1024 + 4 * window;
}
/** Bytes handed to a fast stream and not yet taken before the session waits. */
export const FAST_LINK_BUFFER = 256 * 1024;
/** Past this many bytes not taken by the stream, link replies (ACK, PONG) wait: the newest of each goes once it drains. */
export const LINK_REPLY_BACKLOG = 64 * 1024;

export interface SessionStats {
  /** Copies of frames that had already arrived (the peer sent them again). */
  duplicates: number;
  /** Frames held out of order until a lost one came again. */
  held: number;
  /** Frames dropped because one before them was missing (go-back-N, or beyond the hold bounds). */
  ahead: number;
  /** Sequenced frames sent again. */
  resent: number;
  /** Retransmission timeouts. */
  timeouts: number;
}

export class Session extends EventEmitter {
  private link: Link;
  private sendSeq: number;
  private readonly queue: SendQueue;
  private readonly sender: SendWindow;
  private readonly receiver: ReceiveWindow;
  private readonly reassembler = new Reassembler();
  /** Lossy links: the frame size that carries most through the noise measured. */
  private readonly sizer: FrameSizer | null;
  /** Lossy links: the bound on bytes in flight, so that a frame sent again does not queue behind the line's buffers. */
  private readonly inFlightLimit: InFlightLimit | null;
  private readonly inFlightFloor: number;
  private readonly compressor: Compressor | null;
  private readonly decompressor: Decompressor | null;
  readonly maxBody: number;
  readonly sessionStats: SessionStats = { duplicates: 0, held: 0, ahead: 0, resent: 0, timeouts: 0 };

  /** Bytes written to the stream whose write callback has not run yet. */
  private buffered = 0;
  private readonly acks: Acknowledger;
  private readonly retransmit: RetransmitTimer;
  /** Link replies held back while the stream is full: the newest PONG token, and whether an ACK is owed. */
  private heldPong: number | null = null;
  private heldAck = false;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  /** Go-back-N to a peer that keeps nothing out of order: bytes in flight, halved on each loss (AIMD). */
  private goBackWindow: number;
  /** A timeout's frame goes again whatever is in flight: the frames in flight may all be lost. */
  private timeoutResend = false;
  private lastHeard = Date.now();
  /** When an ACK last made progress, or frames began to wait for one. */
  private lastAckProgress = Date.now();
  private pingToken = 0;
  private closed = false;
  private attached = true;

  constructor(link: Link, readonly options: SessionOptions) {
    super();
    this.link = link;
    this.maxBody = options.maxBody;
    this.sendSeq = options.sendSeq ?? 0;
    const inflated = inflatedLimit(options.maxBody);
    this.queue = new SendQueue(options.maxBody, options.deflate ? inflated : options.maxBody);
    this.sizer = link.lossy ? new FrameSizer(options.maxBody) : null;
    this.inFlightLimit = link.lossy ? new InFlightLimit() : null;
    this.inFlightFloor = IN_FLIGHT_FLOOR_FRAMES * wireBytes(options.maxBody);
    // Before the first measurement: a generous wait, from the line's nominal rate where there is one.
    this.sender = new SendWindow(new RoundTrip(250 + 4 * this.lineMs(options.maxBody), MIN_RETRANSMIT_MS), this.sizer, this.inFlightLimit);
    this.receiver = new ReceiveWindow(options.recvSeq ?? 0, options.selective ?? false);
    this.goBackWindow = this.goBackLimit;
    this.acks = new Acknowledger({
      reply: (type) => this.sendAck(type),
      lossy: link.lossy,
      selective: this.receiver.selective,
      turnaroundMs: () => Math.max(4 * this.lineMs(this.maxBody), this.sender.roundTrip.smoothedMs),
    });
    this.retransmit = new RetransmitTimer({
      awaited: () => this.sender.awaited,
      timeoutMs: () => this.sender.roundTrip.timeoutMs,
      lineMs: (frame) => this.inFlightLimit?.lineMs(frame.frame.length) ?? 0,
      expired: () => this.onRetransmitTimeout(),
    });
    // A slow line is worth the smallest output; on a fast link deflate's speed matters more.
    this.compressor = options.deflate ? new Compressor(link.lossy ? 6 : 1) : null;
    this.decompressor = options.deflate ? new Decompressor(inflated) : null;
    this.listen(link);
    this.startKeepalive();
    // Frames that came in the same read as the handshake's last message are read once the
    // owner, in the same tick as this constructor, has subscribed to 'message'.
    queueMicrotask(() => link.resumeReading());
  }

  /** False while a resumable session waits for a new link. */
  get isAttached(): boolean {
    return this.attached && !this.closed;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The next sequence number this side expects from the peer (sent in a resuming handshake). */
  get nextRecvSeq(): number {
    return this.receiver.expected;
  }

  /** Bytes of sent frames not yet acknowledged by the peer. */
  get unackedByteCount(): number {
    return this.sender.bytes;
  }

  /** Bytes of messages waiting for the link. */
  get queuedByteCount(): number {
    return this.queue.bytes;
  }

  /** Bytes written to the transport that it has not taken yet. */
  get unsentByteCount(): number {
    return this.attached ? this.link.writableLength : 0;
  }

  /** The largest body sent now: max_frame, or less on a noisy line. */
  get frameLimit(): number {
    return this.sizer?.size ?? this.maxBody;
  }

  /** Bytes of frames held out of order. */
  get heldByteCount(): number {
    return this.receiver.holdingBytes;
  }

  get stats() {
    return { ...this.link.stats, ...this.sessionStats };
  }

  private get lossy(): boolean {
    return this.link.lossy;
  }

  /** Line time in ms for `bytes` at the link's nominal rate (0 for links of unknown rate). */
  private lineMs(bytes: number): number {
    const rate = this.link.bytesPerSecond;
    return rate ? (bytes * 1000) / rate : 0;
  }

  /** How much may sit in the stream's buffer: a few frames on a slow line, so waiting output can merge. */
  private get bufferLimit(): number {
    const rate = this.link.bytesPerSecond;
    return rate ? Math.max(2 * this.maxBody, rate / 50) : FAST_LINK_BUFFER;
  }

  private get unackedLimit(): number {
    if (this.lossy && !this.receiverHolds) return this.goBackWindow;
    return this.lossy ? MAX_UNACKED_BYTES_LOSSY : MAX_UNACKED_BYTES_RELIABLE;
  }

  /** Whether another frame may go now: lossy links keep the bytes in flight within their bound (one frame always may). */
  private get inFlightRoom(): boolean {
    if (!this.inFlightLimit || this.sender.inFlightBytes === 0) return true;
    return this.sender.inFlightBytes < this.inFlightLimit.bytes(this.inFlightFloor);
  }

  /** Go-back-N's ceiling: a go-back costs little when little is in flight. */
  private get goBackLimit(): number {
    return Math.max(4 * this.maxBody, (this.link.bytesPerSecond ?? 0) * 0.3);
  }

  /** The peer holds frames out of order (selective repeat): only lost frames go again. */
  private get receiverHolds(): boolean {
    return this.options.selective ?? false;
  }

  private startKeepalive(): void {
    const interval = Math.max(50, this.options.keepalive * 1000);
    this.lastHeard = this.lastAckProgress = Date.now();
    this.keepaliveTimer = setInterval(() => this.keepaliveTick(interval), interval);
    this.keepaliveTimer.unref();
  }

  private listen(link: Link): void {
    link.setSequenceReference(() => this.receiver.expected);
    link.on('frame', (body: Buffer, number: number | null, sequenced: boolean) => this.onFrame(body, number, sequenced));
    link.on('corrupt', () => this.onCorrupt());
    link.on('forged', (count: number) => this.emit('forged', count));
    link.once('close', (error: Error | null) => {
      if (link !== this.link || this.closed) return;
      const why = error ?? new TetherError('PEER_TIMEOUT', 'the connection closed');
      if (this.options.resumable && !(why instanceof TetherError && why.fromPeer)) this.detach(why);
      else this.finish(why);
    });
  }

  /**
   * Goes on over a new, authenticated link after a resuming handshake: frames
   * the peer already has are dropped, the rest are framed with the new link's
   * keys and sent again, then the queue.
   */
  resume(link: Link, peerNextSeq: number): void {
    if (this.closed) throw new TetherError('SESSION_EXPIRED', 'the session has ended');
    this.link = link;
    this.attached = true;
    this.buffered = 0;
    this.heldAck = false;
    this.heldPong = null;
    this.listen(link);
    this.sender.acknowledge(peerNextSeq, undefined, performance.now());
    this.sender.resendAll((entry) => link.encodeSequenced(bodyOfFrame(entry.frame), entry.seq));
    this.goBackWindow = this.goBackLimit;
    this.retransmit.progress(true);
    this.startKeepalive();
    link.resumeReading();
    this.flush();
    this.emit('attached');
  }

  /**
   * The peer is known to have left this link (it resumes the session on
   * another): close it, so a resumable session detaches at once.
   */
  dropLink(error: TetherError): void {
    if (this.attached && !this.closed) this.link.close(error);
  }

  /** The link is gone but the session may resume: keep everything, stop the timers. */
  private detach(error: Error | null): void {
    this.attached = false;
    this.stopTimers();
    this.emit('detached', error);
  }

  private stopTimers(): void {
    this.acks.stop();
    this.retransmit.stop();
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
  }

  /**
   * Queues a sequenced message and sends what the link takes now. Throws
   * FRAME_TOO_LARGE if it cannot be sent. A peer that lets more than
   * maxQueuedBytes(window) wait (it does not acknowledge) ends the session.
   */
  send(message: OutgoingMessage): void {
    if (this.closed) return;
    this.queue.push(message);
    const limit = maxQueuedBytes(this.options.window ?? 0);
    if (this.queue.bytes > limit) {
      this.close(new TetherError('FLOW_CONTROL', `more than ${limit} bytes wait for the peer, which does not acknowledge them`));
      return;
    }
    this.flush();
  }

  /** Writes frames to send again, then queued messages, while the stream's buffer and the unacknowledged bounds allow. */
  private flush(): void {
    if (!this.attached || this.closed) return;
    while (this.buffered < this.bufferLimit && (this.inFlightRoom || this.timeoutResend)) {
      const entry = this.sender.nextResend();
      this.timeoutResend = false;
      if (!entry) break;
      this.sessionStats.resent++;
      this.write(entry);
    }
    while (
      !this.sender.resendWaiting && this.queue.length > 0 && !this.closed && this.buffered < this.bufferLimit &&
      this.sender.bytes < this.unackedLimit && this.sender.count < MAX_UNACKED_FRAMES && this.inFlightRoom
    ) {
      const body = this.nextBody();
      const seq = this.sendSeq++;
      if (this.sender.count === 0) this.lastAckProgress = Date.now();
      // Kept before it is written: a write to a closed link calls back (and flushes) at once.
      this.write(this.sender.add(seq, this.link.encodeSequenced(body, seq)));
    }
    this.armRetransmit();
  }

  /** The next frame body from the queue: with deflate, as much as fits the frame compressed. */
  private nextBody(): BodyParts {
    const limit = this.frameLimit;
    if (!this.compressor) return this.queue.shift(limit)!;
    const { body, offer } = this.compressor.fill(limit, this.queue.reach(limit), (n) => joinBody(this.queue.peek(n)!));
    this.queue.shift(offer);
    return [body];
  }

  /** Writes a sequenced frame (new, or again). */
  private write(entry: SentFrame): void {
    const link = this.link;
    const length = entry.frame.length;
    this.sender.sending(entry);
    const order = entry.order;
    this.buffered += length;
    link.write(entry.frame, () => {
      if (link !== this.link) return;
      this.buffered -= length;
      // The callback of an earlier transmission says nothing about when this one left.
      if (entry.order === order) this.sender.taken(entry, performance.now());
      this.drained();
    });
  }

  /** The stream took a frame: held link replies go now, and more frames if any wait. */
  private drained(): void {
    if (this.link.writableLength < LINK_REPLY_BACKLOG) {
      if (this.heldPong !== null) {
        const token = this.heldPong;
        this.heldPong = null;
        this.sendLink({ type: MsgType.PONG, token });
      }
      if (this.heldAck) {
        this.heldAck = false;
        this.acks.send(MsgType.ACK);
      }
    }
    if (this.queue.length > 0 || this.sender.resendWaiting) this.flush();
  }

  /**
   * Sends a link message (ACK, NAK, PING, PONG, ERROR). While the stream
   * holds more than LINK_REPLY_BACKLOG (a peer that sends and does not read),
   * replies wait instead: the newest PONG, and one ACK with the state of then.
   */
  private sendLink(message: OutgoingMessage): void {
    if (!this.attached) return;
    if (message.type !== MsgType.ERROR && this.link.writableLength >= LINK_REPLY_BACKLOG) {
      if (message.type === MsgType.PONG) this.heldPong = message.token;
      if (message.type === MsgType.ACK || message.type === MsgType.NAK) this.heldAck = true;
      return;
    }
    this.link.sendLinkMessage(encodeMessage(message));
  }

  private onFrame(body: Buffer, number: number | null, sequenced: boolean): void {
    if (this.closed) return;
    this.lastHeard = Date.now();
    if (!sequenced || number === null) {
      this.onLinkFrame(body);
      return;
    }
    const arrival = this.receiver.take(number, body, (next) => this.deliver(next));
    switch (arrival) {
      case 'next':
        this.acks.arrived(body.length);
        // A gap remains behind the frames just delivered: the sender should hear at once.
        if (this.receiver.holding > 0) this.acks.gap(this.receiver.expected);
        return;
      case 'duplicate':
        this.sessionStats.duplicates++;
        this.acks.arrived(0);
        return;
      case 'held':
        this.sessionStats.held++;
        this.acks.gap(this.receiver.expected);
        return;
      case 'dropped':
        this.sessionStats.ahead++;
        this.acks.missing(this.receiver.expected, number - this.receiver.expected);
    }
  }

  /** A delivered sequenced body: inflated, reassembled, decoded, handed on. */
  private deliver(frameBody: Buffer): void {
    if (this.closed) return;
    let body = frameBody;
    if (this.decompressor) {
      try {
        body = this.decompressor.unpack(frameBody);
      } catch (error) {
        // The two histories no longer agree: nothing after this can be read.
        this.close(error as TetherError);
        return;
      }
    }
    let message: Message;
    try {
      // Not CBOR, but read as CBOR it would be the break byte: say what it is.
      if (!this.decompressor && body[0] === COMPRESSED_MARKER) throw new TetherError('BAD_MESSAGE', 'a compressed body, but deflate was not granted');
      message = decodeMessage(body);
      if (message.type === MsgType.FRAGMENT) {
        const whole = this.reassembler.add(message);
        if (!whole) return;
        message = decodeMessage(whole);
      } else if (this.reassembler.pending) {
        // The pieces of one message are sent in a row: anything else between them is a broken sender.
        this.reassembler.reset();
        throw new TetherError('BAD_MESSAGE', 'a message arrived between the fragments of another');
      }
      if (message.type !== 'output' && message.type < MsgType.INFO) {
        throw new TetherError('BAD_MESSAGE', `link message ${message.type} in a sequenced frame`);
      }
    } catch (error) {
      // The frame passed its tag, so this is the peer's mistake, not noise: say so and go on,
      // naming the stream when it is known, so that the command it was for fails (PROTOCOL.md 8.4).
      const e = error instanceof TetherError ? error : new TetherError('BAD_MESSAGE', String(error));
      this.reject(e instanceof MalformedMessage ? e.stream : null, e);
      this.emit('rejected', e);
      return;
    }
    try {
      this.emit('message', message);
    } catch (error) {
      // A message the peer should not have sent: overrunning a bound ends the session,
      // anything else gets a REJECT and the session goes on.
      const e = error instanceof TetherError ? error : new TetherError('INTERNAL', String(error));
      if (e.code === 'FLOW_CONTROL') this.close(e);
      else this.reject('stream' in message ? (message.stream as number) : null, e);
    }
  }

  /**
   * Refuses one sequenced message (on `stream`, or null for one that names
   * none); the session goes on. A REJECT ends the running command it names
   * on both sides (PROTOCOL.md 8.4): 'refused' (stream, why) tells this
   * side's owner of the stream to end it here.
   */
  reject(stream: number | null, why: TetherError): void {
    this.send({ type: MsgType.REJECT, stream, code: why.wireCode, message: why.message });
    if (stream !== null) this.emit('refused', stream, why);
  }

  private onLinkFrame(body: Buffer): void {
    let message: Message;
    try {
      message = decodeMessage(body);
    } catch (error) {
      // An authenticated link frame this version cannot read changes nothing.
      this.emit('rejected', error instanceof TetherError ? error : new TetherError('BAD_MESSAGE', String(error)));
      return;
    }
    switch (message.type) {
      case MsgType.ACK:
        this.onAck(message.nextSeq, message.received, false);
        return;
      case MsgType.NAK:
        this.onAck(message.nextSeq, message.received, true);
        return;
      case MsgType.PING:
        this.sendLink({ type: MsgType.PONG, token: message.token });
        this.acks.flush();
        return;
      case MsgType.PONG:
        return;
      case MsgType.ERROR:
        this.finish(new TetherError(errorName(message.code) ?? 'INTERNAL', `peer closed the session: ${printable(message.message)}`, true));
        return;
      default:
        // A handshake message inside a session is a confused peer; it changes nothing.
        this.emit('rejected', new TetherError('BAD_MESSAGE', `handshake message ${String(message.type)} inside a session`));
    }
  }

  /** ACK or NAK from the peer. */
  private onAck(nextSeq: number, received: Buffer | undefined, nak: boolean): void {
    if (nextSeq > this.sendSeq) {
      this.close(new TetherError('BAD_MESSAGE', `the peer acknowledged frame ${nextSeq - 1}, which was never sent`));
      return;
    }
    const now = performance.now();
    const { progress, measured } = this.sender.acknowledge(nextSeq, received, now);
    if (nak) {
      if (this.receiverHolds) this.sender.damaged();
      else {
        this.goBackWindow = Math.max(2 * this.maxBody, this.goBackWindow / 2);
        this.sender.goBack(nextSeq, now);
      }
    }
    if (progress) {
      this.lastAckProgress = Date.now();
      if (!nak) this.goBackWindow = Math.min(this.goBackLimit, this.goBackWindow + this.maxBody);
    }
    if (progress || measured) this.retransmit.progress(measured);
    this.flush();
  }

  /** A frame failed its CRC (noise). */
  private onCorrupt(): void {
    if (!this.closed) this.acks.damaged(this.receiver.expected);
  }

  /** ACK (or NAK: a frame was damaged or is missing) with the receive state of now. */
  private sendAck(type: AckType): void {
    const received = this.receiver.received();
    this.sendLink(received ? { type, nextSeq: this.receiver.expected, received } : { type, nextSeq: this.receiver.expected });
  }

  /** Lossy links: time the frame whose ACK is awaited longest. */
  private armRetransmit(): void {
    if (this.lossy && !this.closed && this.attached) this.retransmit.arm();
  }

  /** The awaited ACK is late: what is in flight counts as lost and goes again. */
  private onRetransmitTimeout(): void {
    this.sessionStats.timeouts++;
    this.sender.timedOut(!this.receiverHolds);
    this.timeoutResend = true;
    if (!this.receiverHolds) this.goBackWindow = Math.max(2 * this.maxBody, this.goBackWindow / 2);
    this.flush();
  }

  /**
   * Every interval: a peer silent for three intervals, one that has not
   * acknowledged for three, or one that has not read our frames for three, is
   * gone (PEER_TIMEOUT); otherwise PING.
   */
  private keepaliveTick(interval: number): void {
    const now = Date.now();
    const limit = 3 * interval;
    const seconds = Math.round(limit / 1000);
    let why: string | null = null;
    if (now - this.lastHeard > limit) why = `no frame from the peer for ${seconds} s`;
    else if (this.sender.count > 0 && now - this.lastAckProgress > limit) why = `the peer has acknowledged nothing for ${seconds} s`;
    else if (this.link.stalledMs() > limit) why = `the peer has read nothing for ${seconds} s`;
    if (why) {
      const error = new TetherError('PEER_TIMEOUT', why);
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
    if (error && !error.fromPeer) {
      // The ACK owed goes before the ERROR, while the peer still reads: it learns what arrived (PROTOCOL.md 7.5).
      if (this.attached) this.acks.flush();
      this.sendLink({ type: MsgType.ERROR, code: error.wireCode, message: error.message });
    }
    this.finish(error);
  }

  private finish(error: Error | null): void {
    if (this.closed) return;
    // A close without an ERROR of this side's still settles the ACK owed, unless the peer ended the session: it reads nothing after its ERROR.
    if (this.attached && !(error instanceof TetherError && error.fromPeer)) this.acks.flush();
    this.closed = true;
    this.attached = false;
    this.stopTimers();
    this.link.close();
    this.emit('close', error);
  }
}
