/**
 * FRAGMENT: a sequenced message whose body is larger than a frame (a big
 * START on a serial line, a large INFO) goes as pieces in consecutive frames,
 * `[24, more, piece]`, `more` false on the last (send-queue.ts cuts them);
 * the receiver joins them in sequence order and decodes the whole. Nothing else may come between the
 * pieces of one message, and a whole message is at most MAX_MESSAGE_BYTES.
 */
import { ByteRun } from './byte-run';
import { TetherError } from './errors';

/** Largest message, fragmented or not; output and file data never come near it. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Room in a frame for a FRAGMENT's type, flag and length head. */
export const FRAGMENT_HEAD_BYTES = 8;

/**
 * Joins the pieces of one message as they arrive, with its size bounded: the
 * pieces go into one buffer (a ByteRun), not a list, so what is held is the
 * message's bytes (at most twice that in room) whatever the pieces are; a
 * list would hold an object per piece, and a flood of empty pieces costs
 * nothing counted.
 */
export class Reassembler {
  private run: ByteRun | null = null;

  /** A message is half in: anything but its next piece is a broken sender. */
  get pending(): boolean {
    return this.run !== null;
  }

  /** Bytes held for a message not yet whole. */
  get heldBytes(): number {
    return this.run?.length ?? 0;
  }

  /** Memory held for it: its bytes and the room grown for more. */
  get heldMemory(): number {
    return this.run?.memory ?? 0;
  }

  /** Adds a piece; returns the whole body once the last one is in. Throws FRAME_TOO_LARGE past the limit. */
  add(piece: { more: boolean; data: Buffer }): Buffer | null {
    if (this.heldBytes + piece.data.length > MAX_MESSAGE_BYTES) {
      this.reset();
      throw new TetherError('FRAME_TOO_LARGE', `a fragmented message exceeds ${MAX_MESSAGE_BYTES} bytes`);
    }
    if (this.run) this.run.append(piece.data);
    else this.run = new ByteRun(piece.data);
    if (piece.more) return null;
    const body = this.run.bytes();
    this.reset();
    return body;
  }

  reset(): void {
    this.run = null;
  }
}
