/**
 * The deflate capability. Each sequenced message body may be sent compressed:
 * a body whose first byte is 0xff (a CBOR "break", never the start of a
 * message) holds raw deflate data. Each direction compresses every body with
 * the last 32 KiB of its earlier message bodies as the preset dictionary, so
 * logs compress almost as well as with one long stream, yet any body can be
 * sent raw when deflate does not make it smaller (incompressible output costs
 * nothing extra). Both sides add every body, sent raw or compressed, to the
 * history in sequence order; a retransmitted frame is resent as first encoded.
 */
import { constants, deflateRawSync, inflateRawSync } from 'node:zlib';
import { TetherError } from './errors';

export const COMPRESSED_MARKER = 0xff;
const HISTORY_BYTES = 32 * 1024;
/** Bodies shorter than this are never worth compressing. */
const MIN_COMPRESS_BYTES = 48;

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

export class Compressor {
  private readonly history = new History();

  /** Returns the body to send: compressed with the marker, or `body` itself. */
  pack(body: Buffer): Buffer {
    let out = body;
    if (body.length >= MIN_COMPRESS_BYTES) {
      const dictionary = this.history.dictionary;
      const packed = deflateRawSync(body, dictionary.length > 0 ? { dictionary, level: 6 } : { level: 6 });
      if (packed.length + 1 < body.length) out = Buffer.concat([Buffer.from([COMPRESSED_MARKER]), packed]);
    }
    this.history.add(body);
    return out;
  }
}

export class Decompressor {
  private readonly history = new History();

  constructor(private readonly maxBody: number) {}

  /** Returns the message body of a received sequenced body. Throws BAD_MESSAGE. */
  unpack(body: Buffer): Buffer {
    let out = body;
    if (body[0] === COMPRESSED_MARKER) {
      const dictionary = this.history.dictionary;
      try {
        out = inflateRawSync(body.subarray(1), {
          ...(dictionary.length > 0 ? { dictionary } : {}),
          maxOutputLength: this.maxBody,
          finishFlush: constants.Z_SYNC_FLUSH,
        });
      } catch (error) {
        throw new TetherError('BAD_MESSAGE', `compressed body does not inflate: ${(error as Error).message}`);
      }
    }
    this.history.add(out);
    return out;
  }
}
