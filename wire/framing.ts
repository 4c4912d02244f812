/**
 * Framing, the same on every byte stream (TCP, TLS, serial):
 *
 *   wire frame = COBS(body || CRC-32C) 0x00
 *
 * The CRC (4 bytes, little-endian) covers the body, and for sequenced frames
 * it first covers the frame's sequence number as 8 little-endian bytes. The
 * number itself is not sent: as in TLS's record MAC, it is implicit, so a lost
 * or repeated frame fails its check exactly like a corrupted one. The first
 * body byte tells which kind a frame is: below 0x0a it is a link frame
 * (handshake, ack, keepalive, error) with no sequence number.
 */
import { Writable } from 'node:stream';
import { cobsDecodeInPlace, cobsEncodeInto, cobsMaxEncodedLength } from './cobs';
import { crc32c } from './crc32c';

export const CRC_BYTES = 4;
/** First body byte below this: link frame, CRC without a sequence number. */
export const FIRST_SEQUENCED_BYTE = 0x0a;
/** Largest body accepted before the handshake agrees on another size. */
export const HANDSHAKE_MAX_BODY = 1024;

const seqScratch = Buffer.alloc(8);

function seqCrc(seq: number): number {
  seqScratch.writeUInt32LE(seq % 0x1_0000_0000, 0);
  seqScratch.writeUInt32LE(Math.floor(seq / 0x1_0000_0000), 4);
  return crc32c(seqScratch);
}

/** The CRC a frame body carries: over the implicit sequence number (if any), then the body. */
export function frameCrc(body: Uint8Array, seq: number | null): number {
  return crc32c(body, seq === null ? 0 : seqCrc(seq));
}

export function isSequencedBody(body: Uint8Array): boolean {
  return body[0] >= FIRST_SEQUENCED_BYTE;
}

/** Encodes one frame for the wire, delimiter included. `seq` is null for link frames. */
export function encodeFrame(body: Uint8Array, seq: number | null): Buffer {
  const raw = Buffer.allocUnsafe(body.length + CRC_BYTES);
  raw.set(body, 0);
  raw.writeUInt32LE(frameCrc(body, seq), body.length);
  const out = Buffer.allocUnsafe(cobsMaxEncodedLength(raw.length) + 1);
  const end = cobsEncodeInto(raw, out, 0);
  out[end] = 0;
  return out.subarray(0, end + 1);
}

export type FrameCheck =
  | { ok: true; body: Buffer; sequenced: boolean }
  | { ok: false; reason: 'crc' | 'short' };

/**
 * Checks a decoded frame (body || CRC) against the sequence number the
 * receiver expects next. Nothing in the body is interpreted before this passes.
 */
export function checkFrame(frame: Buffer, expectedSeq: number): FrameCheck {
  if (frame.length < CRC_BYTES + 1) return { ok: false, reason: 'short' };
  const body = frame.subarray(0, frame.length - CRC_BYTES);
  const sequenced = isSequencedBody(body);
  const crc = frame.readUInt32LE(body.length);
  if (crc !== frameCrc(body, sequenced ? expectedSeq : null)) return { ok: false, reason: 'crc' };
  return { ok: true, body, sequenced };
}

/**
 * For a sequenced frame that failed its check at `expectedSeq`: the offset
 * from `expectedSeq` of the number whose CRC it does carry, tried first at
 * `hint`, then at +1, -1, +2, -2 ... up to `span` either way; 0 if none
 * matches (the frame is damaged). A negative offset is a copy of a frame
 * that already arrived (sent again), a positive one a frame sent after one
 * that was lost. A damaged frame matches by chance with odds of about
 * 2 × span / 2^32.
 */
export function sequenceOffset(frame: Buffer, expectedSeq: number, span: number, hint = 0): number {
  const body = frame.subarray(0, frame.length - CRC_BYTES);
  const crc = frame.readUInt32LE(body.length);
  const matches = (offset: number) => expectedSeq + offset >= 0 && crc === frameCrc(body, expectedSeq + offset);
  if (hint !== 0 && Math.abs(hint) <= span && matches(hint)) return hint;
  for (let distance = 1; distance <= span; distance++) {
    if (distance !== hint && matches(distance)) return distance;
    if (-distance !== hint && matches(-distance)) return -distance;
  }
  return 0;
}

export interface FrameReaderStats {
  frames: number;
  /** Frames whose COBS encoding was invalid. */
  malformed: number;
  /** Frames longer than the limit, discarded up to the next delimiter without being stored. */
  oversize: number;
}

/**
 * A Writable that splits a byte stream into frames at 0x00 and undoes COBS.
 * The limit is enforced while bytes arrive, so an endless frame costs no more
 * than one frame's buffer. Garbage between frames ends at the next delimiter:
 * that is how the reader resynchronises.
 *
 * Events: 'frame' (Buffer: body || CRC, a copy), 'invalid' ('malformed' | 'oversize').
 */
export class FrameReader extends Writable {
  readonly stats: FrameReaderStats = { frames: 0, malformed: 0, oversize: 0 };
  private buffer: Buffer;
  private length = 0;
  private discarding = false;
  private limit: number;

  constructor(maxBody: number = HANDSHAKE_MAX_BODY) {
    super();
    this.limit = maxBody;
    this.buffer = Buffer.allocUnsafe(cobsMaxEncodedLength(maxBody + CRC_BYTES));
  }

  get maxBody(): number {
    return this.limit;
  }

  /** Changes the body size limit; takes effect from the next frame. */
  setMaxBody(maxBody: number): void {
    this.limit = maxBody;
    const size = cobsMaxEncodedLength(maxBody + CRC_BYTES);
    if (size === this.buffer.length) return;
    const next = Buffer.allocUnsafe(size);
    if (this.length > size) {
      this.discarding = true;
      this.length = 0;
    } else {
      this.buffer.copy(next, 0, 0, this.length);
    }
    this.buffer = next;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.feed(chunk);
    done();
  }

  /** Feeds bytes synchronously (the Writable interface calls this too). */
  feed(chunk: Buffer): void {
    let start = 0;
    while (start < chunk.length) {
      const zero = chunk.indexOf(0, start);
      const end = zero === -1 ? chunk.length : zero;
      this.collect(chunk, start, end);
      if (zero === -1) return;
      this.finishFrame();
      start = zero + 1;
    }
  }

  private collect(chunk: Buffer, start: number, end: number): void {
    if (this.discarding || start === end) return;
    if (this.length + (end - start) > this.buffer.length) {
      this.discarding = true;
      this.length = 0;
      return;
    }
    chunk.copy(this.buffer, this.length, start, end);
    this.length += end - start;
  }

  private finishFrame(): void {
    if (this.discarding) {
      this.discarding = false;
      this.stats.oversize++;
      this.emit('invalid', 'oversize');
      return;
    }
    if (this.length === 0) return;
    const decoded = cobsDecodeInPlace(this.buffer, this.length);
    this.length = 0;
    if (decoded < 0) {
      this.stats.malformed++;
      this.emit('invalid', 'malformed');
      return;
    }
    if (decoded > this.limit + CRC_BYTES) {
      // The encoded size bound lets a few bytes more through when the body holds zeros.
      this.stats.oversize++;
      this.emit('invalid', 'oversize');
      return;
    }
    this.stats.frames++;
    this.emit('frame', Buffer.from(this.buffer.subarray(0, decoded)));
  }
}
