/**
 * FRAGMENT: a sequenced message whose body is larger than a frame (a big
 * START on a serial line, a large INFO) goes as pieces in consecutive frames,
 * `[24, more, piece]`, `more` false on the last (send-queue.ts cuts them);
 * the receiver joins them in sequence order and decodes the whole. Nothing else may come between the
 * pieces of one message, and a whole message is at most MAX_MESSAGE_BYTES.
 */
import { TetherError } from './errors';

/** Largest message, fragmented or not; output and file data never come near it. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Room in a frame for a FRAGMENT's type, flag and length head. */
export const FRAGMENT_HEAD_BYTES = 8;

/** Joins the pieces of one message, with its size bounded as they arrive. */
export class Reassembler {
  private pieces: Buffer[] = [];
  private bytes = 0;

  /** A message is half in: anything but its next piece is a broken sender. */
  get pending(): boolean {
    return this.pieces.length > 0;
  }

  /** Bytes held for a message not yet whole. */
  get heldBytes(): number {
    return this.bytes;
  }

  /** Adds a piece; returns the whole body once the last one is in. Throws FRAME_TOO_LARGE past the limit. */
  add(piece: { more: boolean; data: Buffer }): Buffer | null {
    this.bytes += piece.data.length;
    if (this.bytes > MAX_MESSAGE_BYTES) {
      this.reset();
      throw new TetherError('FRAME_TOO_LARGE', `a fragmented message exceeds ${MAX_MESSAGE_BYTES} bytes`);
    }
    this.pieces.push(piece.data);
    if (piece.more) return null;
    const body = Buffer.concat(this.pieces);
    this.reset();
    return body;
  }

  reset(): void {
    this.pieces = [];
    this.bytes = 0;
  }
}
