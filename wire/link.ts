/**
 * A link is one byte stream (a TCP or TLS socket, a serial port) carrying
 * frames. It owns what is per connection: the frame reader and its limit, the
 * frame keys once the handshake has made them, and the numbering of link
 * frames. It checks every frame before anything in it is decoded: the CRC
 * (else it is line noise: counted, dropped), then, after the handshake, the
 * tag (else it is forged: counted, dropped, and a few of them end the link).
 *
 * Events: 'frame' (body, number | null, sequenced) for every frame that passed;
 * 'corrupt' (reason) for noise; 'forged' (count); 'close' (error | null).
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { BodyParts } from './body-parts';
import { TetherError } from './errors';
import { type FrameAuth, nearestNumber, nextNumber, wireNumber } from './frame-auth';
import {
  CRC_BYTES,
  FrameReader,
  HANDSHAKE_MAX_BODY,
  TRAILER_BYTES,
  authenticatedParts,
  encodeAuthenticatedFrame,
  encodeHandshakeFrame,
  handshakeBody,
  isSequencedBody,
} from './framing';
import { MsgType } from './messages';

export interface LinkStats {
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Frames dropped for a CRC mismatch: line noise (or bytes that were never a frame). */
  crcErrors: number;
  /** Frames dropped for bad COBS, oversize or a body too short to hold its trailer. */
  badFrames: number;
  /** Frames whose CRC was right but whose tag was not: forged, replayed or reflected. */
  forged: number;
}

/**
 * Forged frames a link takes before it closes: a few, so that the odd frame
 * of line noise that passes its CRC by chance (odds 2^-32 per damaged frame)
 * does not end it, while an attacker gets no more than a few tries at a
 * 2^-64 chance each.
 */
export const FORGED_FRAME_BUDGET = 4;

export interface LinkOptions {
  lossy?: boolean;
  bytesPerSecond?: number;
  /** Largest body accepted until the handshake sets it (default HANDSHAKE_MAX_BODY). */
  maxBody?: number;
}

export class Link extends EventEmitter {
  private readonly reader: FrameReader;
  readonly stats: LinkStats = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, crcErrors: 0, badFrames: 0, forged: 0 };
  private closed = false;
  /** Bytes read while nobody listened for frames (between handshake steps): the stream is paused meanwhile. */
  private unread: Buffer | null = null;

  private auth: FrameAuth | null = null;
  /** Where a sequenced frame's number is reconstructed from: the number its receiver expects next. */
  private sequenceReference: () => number = () => 0;
  /** Until an authenticated frame arrives, an ERROR of the handshake may still come (the agent waiting for WELCOME). */
  private handshakeErrorsAccepted = false;
  private linkSendNumber = 0;
  private linkReceiveNumber = 0;
  /** When the stream last took bytes written to it, or began to hold some (Date.now() ms). */
  private lastTaken = Date.now();

  /** A lossy link (a serial line) may drop or corrupt frames: the session sends them again. */
  readonly lossy: boolean;
  /** The line rate the transport was configured with (serial); the line may well be faster. */
  readonly bytesPerSecond: number | undefined;

  constructor(readonly transport: Duplex, options: LinkOptions = {}) {
    super();
    this.lossy = options.lossy ?? false;
    this.bytesPerSecond = options.bytesPerSecond;
    this.reader = new FrameReader(options.maxBody ?? HANDSHAKE_MAX_BODY);
    this.reader.on('frame', (frame: Buffer) => this.onFrame(frame));
    this.reader.on('invalid', (reason: string) => this.corrupt(reason));
    transport.on('data', (chunk: Buffer) => {
      this.stats.bytesIn += chunk.length;
      this.read(chunk);
    });
    transport.once('close', () => this.finish(null));
    transport.on('end', () => this.finish(null));
    transport.on('error', (error: Error) => this.finish(error));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get isAuthenticated(): boolean {
    return this.auth !== null;
  }

  /** Largest frame body accepted now. */
  get maxBody(): number {
    return this.reader.maxBody;
  }

  /** Sets the largest frame body accepted; takes effect from the next frame. */
  setMaxBody(maxBody: number): void {
    this.reader.setMaxBody(maxBody);
  }

  /** Bytes written that the stream has not taken yet. */
  get writableLength(): number {
    return this.transport.writableLength;
  }

  /** How long the stream has held bytes without taking any (0 when it holds none): a peer that does not read. */
  stalledMs(now = Date.now()): number {
    return this.transport.writableLength > 0 ? now - this.lastTaken : 0;
  }

  /**
   * From now on every frame is authenticated, both ways. `sequenceReference`
   * gives the sequence number expected next (frames are numbered near it);
   * with `handshakeErrors`, an ERROR frame of the handshake is still taken
   * until the first authenticated frame arrives.
   */
  authenticate(auth: FrameAuth, sequenceReference: () => number, handshakeErrors = false): void {
    this.auth = auth;
    this.sequenceReference = sequenceReference;
    this.handshakeErrorsAccepted = handshakeErrors;
  }

  /** Points sequenced numbers at another receiver (a resumed session takes over the link). */
  setSequenceReference(reference: () => number): void {
    this.sequenceReference = reference;
  }

  private read(chunk: Buffer): void {
    if (this.closed) return;
    if (this.unread !== null) {
      this.unread = Buffer.concat([this.unread, chunk]);
      return;
    }
    const used = this.listening() ? this.reader.feed(chunk, () => this.listening()) : 0;
    if (used < chunk.length) {
      // Nobody listens between two steps of the handshake: keep the rest unread.
      this.unread = chunk.subarray(used);
      this.transport.pause();
    }
  }

  private listening(): boolean {
    return this.listenerCount('frame') > 0 && !this.closed;
  }

  /** Goes on reading after a pause for want of a listener. */
  resumeReading(): void {
    if (this.unread === null || !this.listening()) return;
    const rest = this.unread;
    this.unread = null;
    this.read(rest);
    if (this.unread === null) this.transport.resume();
  }

  private corrupt(reason: string): void {
    if (reason === 'crc') this.stats.crcErrors++;
    else this.stats.badFrames++;
    this.emit('corrupt', reason);
  }

  private onFrame(frame: Buffer): void {
    if (this.closed) return;
    if (!this.auth) {
      const body = handshakeBody(frame);
      if (!body) this.corrupt(frame.length <= CRC_BYTES ? 'short' : 'crc');
      else if (body.length > this.reader.maxBody) this.corrupt('oversize');
      else this.deliver(body, null, isSequencedBody(body));
      return;
    }
    const parts = authenticatedParts(frame);
    if (!parts) {
      const late = this.handshakeErrorsAccepted ? handshakeBody(frame) : null;
      if (late && late[0] === MsgType.ERROR) this.deliver(late, null, false);
      else this.corrupt(frame.length <= TRAILER_BYTES ? 'short' : 'crc');
      return;
    }
    const { body, low, tag } = parts;
    if (body.length > this.reader.maxBody) {
      this.corrupt('oversize');
      return;
    }
    const sequenced = isSequencedBody(body);
    const number = sequenced ? nearestNumber(low, this.sequenceReference()) : nextNumber(low, this.linkReceiveNumber);
    if (!this.auth.verify(number, body, tag)) {
      this.forged();
      return;
    }
    this.handshakeErrorsAccepted = false;
    if (!sequenced) this.linkReceiveNumber = number + 1;
    this.deliver(body, number, sequenced);
  }

  private deliver(body: Buffer, number: number | null, sequenced: boolean): void {
    this.stats.framesIn++;
    this.emit('frame', body, number, sequenced);
  }

  private forged(): void {
    this.stats.forged++;
    this.emit('forged', this.stats.forged);
    // The connection is closed as a broken one is, without ERROR: a resumable session then
    // resumes over a new connection with new keys, and the attacker has not ended it.
    if (this.stats.forged >= FORGED_FRAME_BUDGET) {
      this.close(new TetherError('AUTH_FAILED', `${this.stats.forged} frames failed authentication: the link is being tampered with`));
    }
  }

  /** Sends a handshake frame (before the keys exist). */
  sendHandshake(body: Buffer): void {
    this.write(encodeHandshakeFrame(body));
  }

  /** Sends a link frame (ACK, NAK, PING, PONG, ERROR, WELCOME): authenticated, with the next link-frame number. */
  sendLinkMessage(body: Buffer): number {
    const frame = this.encode(body, this.linkSendNumber++);
    this.write(frame);
    return frame.length;
  }

  /** The wire frame of a sequenced body with its sequence number (the session keeps it, to send again). */
  encodeSequenced(body: Uint8Array | BodyParts, seq: number): Buffer {
    return this.encode(body, seq);
  }

  private encode(body: Uint8Array | BodyParts, number: number): Buffer {
    if (!this.auth) throw new TetherError('NOT_AUTHENTICATED', 'a session frame before the handshake made the keys');
    return encodeAuthenticatedFrame(body, wireNumber(number), this.auth.tag(number, body));
  }

  /** Writes an encoded frame; `flushed` runs once the stream has taken it (or failed to). Returns false when the stream wants a pause. */
  write(frame: Buffer, flushed?: () => void): boolean {
    if (this.closed) {
      flushed?.();
      return false;
    }
    this.stats.framesOut++;
    this.stats.bytesOut += frame.length;
    if (this.transport.writableLength === 0) this.lastTaken = Date.now();
    return this.transport.write(frame, () => {
      this.lastTaken = Date.now();
      flushed?.();
    });
  }

  /** Ends the link: flushes what was written, then closes the stream. */
  close(error: TetherError | Error | null = null): void {
    if (this.closed) return;
    this.transport.end();
    const timer = setTimeout(() => this.transport.destroy(), 2000);
    timer.unref();
    this.finish(error);
  }

  private finish(error: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.unread = null;
    this.emit('close', error);
  }
}
