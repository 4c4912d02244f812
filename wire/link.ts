/**
 * A link is one byte stream (a TCP or TLS socket, a serial port) carrying
 * frames. It checks every frame's CRC against the sequence number expected
 * next and hands on only frames that pass; the rest are counted and dropped
 * without being decoded.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { TetherError } from './errors';
import { FrameReader, HANDSHAKE_MAX_BODY, checkFrame, encodeFrame, isSequencedBody, sequenceOffset } from './framing';

export interface LinkStats {
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Frames dropped for a CRC mismatch: damaged, or (on a reliable link) not the sequence number expected. */
  crcErrors: number;
  /** Lossy links: frames dropped as copies, sent again, of frames that already arrived. */
  duplicates: number;
  /** Lossy links: frames dropped because one before them was lost (go-back-N keeps nothing out of order). */
  ahead: number;
  /** Frames dropped for bad COBS, oversize or a body too short to hold a CRC. */
  badFrames: number;
}

const MAX_BACKLOG = 64;
/**
 * On a lossy link, how many sequence numbers either side of the expected one
 * a failed frame is tried at, to tell damage from a frame sent again or one
 * after a lost frame: more than a go-back resends of frames the receiver
 * already has (its ACKs go out every 32 frames).
 */
const SEQUENCE_SEARCH_SPAN = 128;

export interface LinkOptions {
  lossy?: boolean;
  bytesPerSecond?: number;
  /** Largest body accepted until the handshake sets it (default HANDSHAKE_MAX_BODY). */
  maxBody?: number;
}

export class Link extends EventEmitter {
  readonly reader: FrameReader;
  readonly stats: LinkStats = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, crcErrors: 0, duplicates: 0, ahead: 0, badFrames: 0 };
  /** Sequence number of the next sequenced frame to accept. */
  expectedSeq = 0;
  private closed = false;
  /** Offset of the last frame placed by sequenceOffset(): the next one most likely follows it. */
  private lastOffset = 0;
  /** Frames that arrived while nobody listened (between handshake steps), not yet checked. */
  private readonly backlog: Buffer[] = [];

  /** A lossy link (a serial line) may drop or corrupt frames: the session retransmits. */
  readonly lossy: boolean;
  /** The line rate, where the transport knows it (serial). */
  readonly bytesPerSecond: number | undefined;

  constructor(readonly stream: Duplex, options: LinkOptions = {}) {
    super();
    this.lossy = options.lossy ?? false;
    this.bytesPerSecond = options.bytesPerSecond;
    const maxBody = options.maxBody ?? HANDSHAKE_MAX_BODY;
    this.reader = new FrameReader(maxBody);
    this.reader.on('frame', (frame: Buffer) => this.onFrame(frame));
    this.reader.on('invalid', (reason: string) => {
      this.stats.badFrames++;
      this.emit('corrupt', reason);
    });
    stream.on('data', (chunk: Buffer) => {
      this.stats.bytesIn += chunk.length;
      this.reader.feed(chunk);
    });
    stream.once('close', () => this.finish(null));
    stream.on('end', () => this.finish(null));
    stream.on('error', (error: Error) => this.finish(error));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private onFrame(frame: Buffer): void {
    if (this.closed) return;
    if (this.listenerCount('frame') === 0) {
      // The handshake and the session take over between two frames of one read: keep the
      // frame for whoever listens next, unchecked, since the sequence number may change.
      if (this.backlog.length >= MAX_BACKLOG) this.close(new TetherError('FLOW_CONTROL', 'too many frames before the session started'));
      else this.backlog.push(frame);
      return;
    }
    this.checkAndEmit(frame);
  }

  /** Hands frames that arrived while nobody listened to the listener now attached. */
  deliverBacklog(): void {
    while (this.backlog.length > 0 && this.listenerCount('frame') > 0 && !this.closed) this.checkAndEmit(this.backlog.shift()!);
  }

  private checkAndEmit(frame: Buffer): void {
    const check = checkFrame(frame, this.expectedSeq);
    if (!check.ok) {
      if (check.reason === 'crc' && this.lossy && isSequencedBody(frame)) {
        const offset = sequenceOffset(frame, this.expectedSeq, SEQUENCE_SEARCH_SPAN, this.lastOffset + 1);
        this.lastOffset = offset;
        if (offset < 0) {
          this.stats.duplicates++;
          this.emit('duplicate');
          return;
        }
        if (offset > 0) {
          this.stats.ahead++;
          this.emit('ahead', offset);
          return;
        }
      }
      if (check.reason === 'crc') this.stats.crcErrors++;
      else this.stats.badFrames++;
      this.emit('corrupt', check.reason);
      return;
    }
    this.stats.framesIn++;
    this.emit('frame', check.body, check.sequenced);
  }

  /** Writes one frame; `seq` null for a link frame. Returns false when the stream wants a pause. */
  send(body: Buffer, seq: number | null): boolean {
    return this.writeRaw(encodeFrame(body, seq));
  }

  /** Writes an encoded frame; `flushed` runs once the stream has taken it (or failed to). */
  writeRaw(frame: Buffer, flushed?: () => void): boolean {
    if (this.closed) {
      flushed?.();
      return false;
    }
    this.stats.framesOut++;
    this.stats.bytesOut += frame.length;
    return this.stream.write(frame, flushed && (() => flushed()));
  }

  /** Ends the link: flushes what was written, then closes the stream. */
  close(error: TetherError | Error | null = null): void {
    if (this.closed) return;
    this.stream.end();
    const timer = setTimeout(() => this.stream.destroy(), 2000);
    timer.unref();
    this.finish(error);
  }

  private finish(error: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close', error);
  }
}
