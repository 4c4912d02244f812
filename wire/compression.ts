/**
 * The deflate capability. Each sequenced message body may be sent compressed:
 * a body whose first byte is 0xff (a CBOR "break", never the start of a
 * message) holds raw deflate data. Each direction compresses every body with
 * the last 32 KiB of its earlier message bodies as the preset dictionary, so
 * logs compress almost as well as with one long stream, yet any body can be
 * sent raw when deflate does not make it smaller (incompressible output costs
 * nothing extra). Both sides add every body, sent raw or compressed, to the
 * history in sequence order; a retransmitted frame is resent as first encoded.
 *
 * The frame size limits the body as sent: a sender fills a frame with
 * compressed bytes (fill()), and a body may inflate to more than max_frame,
 * up to inflatedLimit(). Cut before deflate, a 512-byte serial frame carried a
 * tenth of its room in text, and the per-frame overhead and the line's noise
 * were paid ten times over.
 */
import type * as Zlib from 'node:zlib';
import { TetherError } from './errors';

/** node:zlib, loaded by the first body deflated or inflated: a session without deflate (TCP's default) never pays its 1.4 MB (2 MB on Node 24). */
const zlib = (): typeof Zlib => require('node:zlib') as typeof Zlib;

export const COMPRESSED_MARKER = 0xff;
const HISTORY_BYTES = 32 * 1024;
/** Bodies shorter than this are never worth compressing. */
const MIN_COMPRESS_BYTES = 48;
/** What a body may inflate to when max_frame is smaller (PROTOCOL.md 7.6). */
export const MIN_INFLATED_LIMIT = 16 * 1024;
/** A filled frame aims at this share of its room: the next body compresses a little worse or better than the last. */
const FILL = 0.95;
/** Attempts to fill a frame before it takes only what fits raw. */
const FILL_TRIES = 3;

/** The most a compressed body may inflate to, with `maxFrame` negotiated. */
export function inflatedLimit(maxFrame: number): number {
  return Math.max(maxFrame, MIN_INFLATED_LIMIT);
}

class History {
  private buffer = Buffer.alloc(0);

  get dictionary(): Buffer {
    return this.buffer;
  }

  add(body: Buffer): void {
    if (body.length >= HISTORY_BYTES) {
      this.buffer = Buffer.from(body.subarray(body.length - HISTORY_BYTES));
      return;
    }
    const keep = Math.min(this.buffer.length, HISTORY_BYTES - body.length);
    this.buffer = Buffer.concat([this.buffer.subarray(this.buffer.length - keep), body]);
  }
}

/** After a body that did not shrink, the bodies sent raw without trying, doubling up to this many. */
const MAX_SKIP = 16;
/**
 * Only bodies this big are skipped, or count as not shrinking: deflating a
 * small one costs little, and on a slow line (512-byte frames) every byte
 * saved counts, even right after an incompressible upload.
 */
const SKIP_MIN_BYTES = 4096;

export class Compressor {
  private readonly history = new History();
  /** Bodies to send raw without trying (incompressible data: archives, random bytes). */
  private skip = 0;
  private nextSkip = 1;
  /** Bodies deflate was run on, and those it made smaller. */
  readonly stats = { tried: 0, packed: 0 };

  /** `level`: zlib's 1 (fast, for fast links) to 9 (smallest, for slow lines). */
  constructor(private readonly level = 6) {}

  /** Plain bytes per byte sent, of the last body filled: how much the next frame is offered. */
  private ratio = 1;

  /** Returns the body to send: compressed with the marker, or `body` itself. */
  pack(body: Buffer): Buffer {
    const packed = this.deflate(body);
    this.history.add(body);
    return packed ?? body;
  }

  /**
   * A body of at most `limit` bytes as sent, holding as much of the waiting
   * plain bytes as deflate lets it, up to `most`. `plain(offer)` gives the
   * first `offer` bytes waiting (fewer when fewer wait). Returns the body to
   * send and the offer it holds, which the caller then takes from its queue.
   * The offer starts at what the last body's ratio promises, shrinks by what
   * an attempt missed by, and after FILL_TRIES is `limit`, which always fits.
   */
  fill(limit: number, most: number, plain: (offer: number) => Buffer): { body: Buffer; offer: number } {
    let offer = this.skip > 0 ? limit : Math.max(limit, Math.min(most, Math.floor(limit * this.ratio * FILL)));
    for (let tries = 1; ; tries++) {
      const body = plain(offer);
      const sent = this.deflate(body) ?? body;
      // A body within the limit always fits: deflate's result is used only when smaller.
      if (sent.length <= limit) {
        if (body.length >= MIN_COMPRESS_BYTES) this.ratio = body.length / sent.length;
        this.history.add(body);
        return { body: sent, offer };
      }
      offer = tries < FILL_TRIES ? Math.max(limit, Math.floor((body.length * limit * FILL) / sent.length)) : limit;
    }
  }

  /** The body compressed, with the marker; null when it is sent as it is. */
  private deflate(body: Buffer): Buffer | null {
    if (body.length < MIN_COMPRESS_BYTES) return null;
    const big = body.length >= SKIP_MIN_BYTES;
    if (big && this.skip > 0) {
      this.skip--;
      return null;
    }
    this.stats.tried++;
    const dictionary = this.history.dictionary;
    const packed = zlib().deflateRawSync(body, dictionary.length > 0 ? { dictionary, level: this.level } : { level: this.level });
    if (packed.length + 1 < body.length) {
      this.stats.packed++;
      this.nextSkip = 1;
      return Buffer.concat([Buffer.from([COMPRESSED_MARKER]), packed]);
    }
    if (big) {
      // Data that does not shrink usually goes on not shrinking: stop paying for deflate, and look again now and then.
      this.skip = this.nextSkip;
      this.nextSkip = Math.min(MAX_SKIP, 2 * this.nextSkip);
    }
    return null;
  }
}

export class Decompressor {
  private readonly history = new History();

  /** `maxBody`: the most a body may inflate to, inflatedLimit(max_frame). */
  constructor(private readonly maxBody: number) {}

  /** Returns the message body of a received sequenced body. Throws BAD_MESSAGE. */
  unpack(body: Buffer): Buffer {
    let out = body;
    if (body[0] === COMPRESSED_MARKER) {
      const dictionary = this.history.dictionary;
      try {
        out = zlib().inflateRawSync(body.subarray(1), {
          ...(dictionary.length > 0 ? { dictionary } : {}),
          maxOutputLength: this.maxBody,
          finishFlush: zlib().constants.Z_SYNC_FLUSH,
        });
      } catch (error) {
        throw new TetherError('BAD_MESSAGE', `compressed body does not inflate: ${(error as Error).message}`);
      }
    }
    this.history.add(out);
    return out;
  }
}
