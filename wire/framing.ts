/**
 * Framing, the same on every byte stream (TCP, TLS, serial):
 *
 *   handshake frame      = COBS(body || CRC) 0x00
 *   authenticated frame  = COBS(body || number || tag || CRC) 0x00
 *
 * CRC-32C (4 bytes, little-endian) covers everything before it; it tells line
 * noise from everything else. An authenticated frame's CRC first covers one
 * implicit byte, AUTHENTICATED_CRC_PREFIX, which is not sent: a handshake frame
 * read as an authenticated one (or the other way round) fails its CRC, like
 * noise, instead of being taken for a forgery. After the handshake every frame is
 * authenticated (frame-auth.ts): `number` is the low 16 bits of its frame
 * number (2 bytes, little-endian), `tag` 8 bytes of HMAC. The first body byte
 * tells which kind a frame is: below 0x0a a link frame (handshake, ACK,
 * keepalive, ERROR), numbered by its own counter; from 0x0a a sequenced frame,
 * numbered by its sequence number.
 */
import { Writable } from 'node:stream';
import { type BodyParts, bodyLength, bodyParts } from './body-parts';
import { cobsDecodeInPlace, cobsEncodeInto, cobsMaxEncodedLength } from './cobs';
import { crc32c } from './crc32c';
import { NUMBER_BYTES, TAG_BYTES } from './frame-auth';

export const CRC_BYTES = 4;
/** What an authenticated frame carries after its body: number, tag, CRC. */
export const TRAILER_BYTES = NUMBER_BYTES + TAG_BYTES + CRC_BYTES;
/** The byte an authenticated frame's CRC covers first, not sent: the protocol version. */
export const AUTHENTICATED_CRC_PREFIX = 0x02;
const AUTHENTICATED_CRC_SEED = crc32c(Buffer.from([AUTHENTICATED_CRC_PREFIX]));
/** First body byte below this: link frame. */
export const FIRST_SEQUENCED_BYTE = 0x0a;
/** Largest body accepted before the handshake agrees on another size. */
export const HANDSHAKE_MAX_BODY = 1024;

export function isSequencedBody(body: Uint8Array): boolean {
  return body[0] >= FIRST_SEQUENCED_BYTE;
}

function crcBytes(parts: readonly Uint8Array[], seed: number): Buffer {
  let crc = seed;
  for (const part of parts) crc = crc32c(part, crc);
  const out = Buffer.allocUnsafe(CRC_BYTES);
  out.writeUInt32LE(crc, 0);
  return out;
}

/** COBS-encodes the parts of one frame and adds the CRC and the delimiter: one allocation, no joining. */
function encodeParts(parts: Uint8Array[], seed: number): Buffer {
  parts.push(crcBytes(parts, seed));
  const out = Buffer.allocUnsafe(cobsMaxEncodedLength(bodyLength(parts)) + 1);
  const end = cobsEncodeInto(parts, out, 0);
  out[end] = 0;
  return out.subarray(0, end + 1);
}

/** A handshake frame (HELLO, CHALLENGE, PROOF, an ERROR during the handshake), delimiter included. */
export function encodeHandshakeFrame(body: Uint8Array): Buffer {
  return encodeParts([body], 0);
}

/** An authenticated frame: `low` the frame number's low 16 bits, `tag` its tag. */
export function encodeAuthenticatedFrame(body: Uint8Array | BodyParts, low: number, tag: Uint8Array): Buffer {
  const number = Buffer.allocUnsafe(NUMBER_BYTES);
  number.writeUInt16LE(low, 0);
  return encodeParts([...bodyParts(body), number, tag], AUTHENTICATED_CRC_SEED);
}

/** The body of an authenticated frame this side encoded (delimiter included): what it was built from, a copy. */
export function bodyOfFrame(wire: Buffer): Buffer {
  const decoded = Buffer.from(wire.subarray(0, wire.length - 1));
  return decoded.subarray(0, cobsDecodeInPlace(decoded, decoded.length) - TRAILER_BYTES);
}

function crcMatches(frame: Buffer, seed: number): boolean {
  const end = frame.length - CRC_BYTES;
  return frame.readUInt32LE(end) === crc32c(frame, seed, 0, end);
}

/** The body of a decoded handshake frame, or null if it is too short or fails its CRC. */
export function handshakeBody(frame: Buffer): Buffer | null {
  if (frame.length < CRC_BYTES + 1 || !crcMatches(frame, 0)) return null;
  return frame.subarray(0, frame.length - CRC_BYTES);
}

export interface AuthenticatedParts {
  body: Buffer;
  /** The frame number's low 16 bits. */
  low: number;
  tag: Buffer;
}

/** The parts of a decoded authenticated frame, or null if it is too short or fails its CRC. */
export function authenticatedParts(frame: Buffer): AuthenticatedParts | null {
  if (frame.length < TRAILER_BYTES + 1 || !crcMatches(frame, AUTHENTICATED_CRC_SEED)) return null;
  const bodyEnd = frame.length - TRAILER_BYTES;
  return {
    body: frame.subarray(0, bodyEnd),
    low: frame.readUInt16LE(bodyEnd),
    tag: frame.subarray(bodyEnd + NUMBER_BYTES, bodyEnd + NUMBER_BYTES + TAG_BYTES),
  };
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
 * The limit (on the body; the buffer also holds the longest trailer) is
 * enforced while bytes arrive, so an endless frame costs no more than one
 * frame's buffer. Garbage between frames ends at the next delimiter: that is
 * how the reader resynchronises.
 *
 * Events: 'frame' (Buffer: body || trailer, a copy in memory of its own), 'invalid' ('malformed' | 'oversize').
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
    this.buffer = Buffer.allocUnsafe(cobsMaxEncodedLength(maxBody + TRAILER_BYTES));
  }

  get maxBody(): number {
    return this.limit;
  }

  /** Changes the body size limit; takes effect from the next frame. */
  setMaxBody(maxBody: number): void {
    this.limit = maxBody;
    const size = cobsMaxEncodedLength(maxBody + TRAILER_BYTES);
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

  /**
   * Feeds bytes synchronously, frame by frame, while `more()` says to go on;
   * returns how many bytes of `chunk` were consumed (all of them unless
   * `more()` stopped it after a frame).
   */
  feed(chunk: Buffer, more: () => boolean = () => true): number {
    let start = 0;
    while (start < chunk.length) {
      const zero = chunk.indexOf(0, start);
      const end = zero === -1 ? chunk.length : zero;
      this.collect(chunk, start, end);
      if (zero === -1) return chunk.length;
      this.finishFrame();
      start = zero + 1;
      if (!more()) return start;
    }
    return start;
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
    if (decoded > this.limit + TRAILER_BYTES) {
      // The encoded size bound lets a few bytes more through when the body holds zeros.
      this.stats.oversize++;
      this.emit('invalid', 'oversize');
      return;
    }
    this.stats.frames++;
    // A body of its own, exactly its size: Buffer.from would put a small one in Node's shared
    // 8 KiB pool, and whatever a side holds of it (a frame out of order, a field) would keep
    // the whole pool slab alive.
    const body = Buffer.allocUnsafeSlow(decoded);
    this.buffer.copy(body, 0, 0, decoded);
    this.emit('frame', body);
  }
}
