/**
 * A session carries sequenced messages over a link once the handshake is
 * done. Each direction numbers its sequenced frames from the number agreed in
 * the handshake; the receiver acknowledges cumulatively (ACK n: all below n
 * arrived), and the sender keeps every unacknowledged frame so that it can
 * send it again: after a NAK on a lossy line, or on a new link when a session
 * resumes. Keepalive pings find a dead peer on links that never report one.
 */
import { EventEmitter } from 'node:events';
import { TetherError, errorName } from './errors';
import type { Link } from './link';
import { type Message, MsgType, type OutgoingMessage, decodeMessage, encodeMessage } from './messages';
import { encodeFrame } from './framing';

export interface SessionOptions {
  /** Largest frame body either side may send. */
  maxBody: number;
  /** Seconds between pings; the peer is dead after three intervals without a frame from it. */
  keepalive: number;
  /** Lossy links (serial) retransmit on NAK and timeout; TCP and TLS never lose a frame. */
  lossy?: boolean;
  /** The next sequence number the peer expects from us, and we from it. */
  sendSeq?: number;
  recvSeq?: number;
}

/** Acknowledge at the latest after this many frames, bytes or milliseconds. */
const ACK_EVERY_FRAMES = 32;
const ACK_EVERY_BYTES = 32 * 1024;
const ACK_DELAY_MS = 10;
const RETRANSMIT_MS = 1000;

interface Unacked {
  seq: number;
  frame: Buffer;
}

export class Session extends EventEmitter {
  private link: Link;
  private sendSeq: number;
  private readonly unacked: Unacked[] = [];
  private unackedBytes = 0;
  private pendingAckFrames = 0;
  private pendingAckBytes = 0;
  private ackTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private retransmitTimer: NodeJS.Timeout | null = null;
  private lastHeard = Date.now();
  private pingToken = 0;
  private lastNakAt = 0;
  private closed = false;
  readonly maxBody: number;

  constructor(link: Link, readonly options: SessionOptions) {
    super();
    this.maxBody = options.maxBody;
    this.sendSeq = options.sendSeq ?? 0;
    this.link = link;
    link.expectedSeq = options.recvSeq ?? 0;
    this.attach(link);
    link.deliverBacklog();
    const interval = Math.max(50, options.keepalive * 1000);
    this.keepaliveTimer = setInterval(() => this.keepaliveTick(interval), interval);
    this.keepaliveTimer.unref();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes of sent frames not yet acknowledged by the peer. */
  get unackedByteCount(): number {
    return this.unackedBytes;
  }

  get stats() {
    return this.link.stats;
  }

  private attach(link: Link): void {
    link.on('frame', (body: Buffer, sequenced: boolean) => this.onFrame(body, sequenced));
    link.on('corrupt', () => this.onCorrupt());
    link.once('close', (error: Error | null) =>
      this.finish(error ?? new TetherError('PEER_TIMEOUT', 'the connection closed')),
    );
  }

  /** Sends a sequenced message. Throws FRAME_TOO_LARGE if it does not fit in a frame. */
  send(message: OutgoingMessage): void {
    if (this.closed) return;
    const body = encodeMessage(message);
    if (body.length > this.maxBody) {
      throw new TetherError('FRAME_TOO_LARGE', `a ${body.length}-byte message exceeds the ${this.maxBody}-byte frame limit`);
    }
    const seq = this.sendSeq++;
    const frame = encodeFrame(body, seq);
    this.unacked.push({ seq, frame });
    this.unackedBytes += frame.length;
    this.link.writeRaw(frame);
    if (this.options.lossy) this.armRetransmit();
  }

  /** Sends a link message (ack, ping, error): not sequenced, never retransmitted. */
  private sendLink(message: OutgoingMessage): void {
    this.link.send(encodeMessage(message), null);
  }

  private onFrame(body: Buffer, sequenced: boolean): void {
    this.lastHeard = Date.now();
    if (sequenced) {
      this.link.expectedSeq++;
      this.pendingAckFrames++;
      this.pendingAckBytes += body.length;
      this.scheduleAck();
    }
    let message: Message;
    try {
      message = decodeMessage(body);
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
        this.onAck(message.nextSeq);
        this.retransmitFrom(message.nextSeq);
        return;
      case MsgType.PING:
        this.sendLink({ type: MsgType.PONG, token: message.token });
        this.flushAck();
        return;
      case MsgType.PONG:
        return;
      case MsgType.ERROR:
        this.finish(new TetherError(errorName(message.code) ?? 'INTERNAL', `peer closed the session: ${message.message}`));
        return;
      default:
        // A handshake message inside a session is a confused peer; it changes nothing.
        this.emit('rejected', new TetherError('BAD_MESSAGE', `handshake message ${String(message.type)} inside a session`));
    }
  }

  private onCorrupt(): void {
    if (!this.options.lossy) return;
    // Ask for a retransmission, at most once per half retransmit interval.
    const now = Date.now();
    if (now - this.lastNakAt < RETRANSMIT_MS / 2) return;
    this.lastNakAt = now;
    this.sendLink({ type: MsgType.NAK, nextSeq: this.link.expectedSeq });
  }

  private onAck(nextSeq: number): void {
    let dropped = false;
    while (this.unacked.length > 0 && this.unacked[0].seq < nextSeq) {
      this.unackedBytes -= this.unacked.shift()!.frame.length;
      dropped = true;
    }
    if (dropped && this.options.lossy) {
      this.clearRetransmit();
      if (this.unacked.length > 0) this.armRetransmit();
    }
  }

  private retransmitFrom(seq: number): void {
    for (const entry of this.unacked) if (entry.seq >= seq) this.link.writeRaw(entry.frame);
    if (this.options.lossy) {
      this.clearRetransmit();
      if (this.unacked.length > 0) this.armRetransmit();
    }
  }

  private armRetransmit(): void {
    if (this.retransmitTimer) return;
    this.retransmitTimer = setTimeout(() => {
      this.retransmitTimer = null;
      if (this.unacked.length > 0) this.retransmitFrom(this.unacked[0].seq);
    }, RETRANSMIT_MS);
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
      this.close(new TetherError('PEER_TIMEOUT', `no frame from the peer for ${Math.round((3 * interval) / 1000)} s`));
      return;
    }
    this.sendLink({ type: MsgType.PING, token: this.pingToken++ % 0x10000 });
  }

  /** Ends the session: tells the peer why (if there is an error), then closes the link. */
  close(error: TetherError | null = null): void {
    if (this.closed) return;
    if (error) this.sendLink({ type: MsgType.ERROR, code: error.wireCode, message: error.message });
    this.finish(error);
  }

  private finish(error: Error | null): void {
    if (this.closed) return;
    this.flushAck();
    this.closed = true;
    for (const timer of [this.ackTimer, this.retransmitTimer]) if (timer) clearTimeout(timer);
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.link.close();
    this.emit('close', error);
  }
}
