/**
 * Payload that waits for a slow consumer, in as few pieces as possible: a
 * backlog of many small chunks costs its bytes, not an object per chunk, and
 * large chunks are kept as they came, without a copy (a decoded byte string
 * is at least half the memory behind it, wire/cbor.ts). The room it grows is
 * its own memory, outside Node's shared pool, so a small run never keeps a
 * pool slab of other bytes alive.
 */

/** A chunk joins the run before it when either of them is smaller than this. */
const JOIN_BELOW = 4096;

export class ByteRun {
  private buffer: Buffer;
  private used: number;
  /** True once `buffer` is our own (grown here), not the first chunk as it came. */
  private owned = false;

  constructor(first: Buffer) {
    this.buffer = first;
    this.used = first.length;
  }

  get length(): number {
    return this.used;
  }

  /** The memory it keeps alive: its room, or all that is behind the chunk it was given. */
  get memory(): number {
    return this.buffer.buffer.byteLength;
  }

  /**
   * True if `chunk` may join this run: it or the run is small (two large
   * pieces stay apart). So every run but the first of a backlog holds at
   * least JOIN_BELOW bytes.
   */
  canJoin(chunk: Buffer): boolean {
    return chunk.length < JOIN_BELOW || this.used < JOIN_BELOW;
  }

  /** Appends `chunk`; the room grown is at most twice what is held. */
  append(chunk: Buffer): void {
    const need = this.used + chunk.length;
    if (!this.owned || need > this.buffer.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(need, 2 * this.used));
      this.buffer.copy(grown, 0, 0, this.used);
      this.buffer = grown;
      this.owned = true;
    }
    chunk.copy(this.buffer, this.used);
    this.used = need;
  }

  bytes(): Buffer {
    return this.buffer.subarray(0, this.used);
  }
}
