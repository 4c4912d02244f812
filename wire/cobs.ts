/**
 * Consistent Overhead Byte Stuffing: removes every 0x00 from a frame so 0x00
 * can delimit frames. Overhead is one byte per 254 bytes (at least one).
 * Runs between zeros are found with indexOf and moved with native copies:
 * this is the hot path of every byte on the wire.
 */
import { type BodyParts, bodyParts } from './body-parts';

/** Largest encoded size of `length` input bytes, delimiter excluded. */
export function cobsMaxEncodedLength(length: number): number {
  return length + Math.ceil((length + 1) / 254);
}

/**
 * Encodes `src` (one buffer, or the parts of one frame in order, so a frame is
 * never joined before it is encoded) into `dst` at `offset`; returns the
 * offset after the last byte written.
 */
export function cobsEncodeInto(src: Uint8Array | BodyParts, dst: Uint8Array, offset: number): number {
  const parts = bodyParts(src);
  /** Where the current block's code byte goes. */
  let code = offset;
  let out = offset + 1;
  /** Data bytes in the current block. */
  let run = 0;
  for (const part of parts) {
    const source = Buffer.from(part.buffer, part.byteOffset, part.length);
    let at = 0;
    while (at < source.length) {
      const zero = source.indexOf(0, at);
      const end = zero === -1 ? source.length : zero;
      if (end > at) {
        // The run [at, end) has no zero. It goes out in one copy; then every block after the
        // first is moved right, last first, to open a gap for its code byte. copyWithin
        // allocates nothing, where a subarray for each 254-byte block cost most of the time.
        const length = end - at;
        dst.set(at === 0 && end === source.length ? source : source.subarray(at, end), out);
        const first = Math.min(length, 254 - run);
        const later = Math.ceil((length - first) / 254);
        for (let b = later; b >= 1; b--) {
          const from = out + first + (b - 1) * 254;
          dst.copyWithin(from + b, from, Math.min(from + 254, out + length));
        }
        // The code bytes: a full block's is 0xff, and the next block's goes in the gap after it.
        let size = first;
        for (let left = length; left > 0; left -= size, size = Math.min(254, left)) {
          out += size;
          run += size;
          if (run === 254) {
            dst[code] = 0xff;
            code = out++;
            run = 0;
          }
        }
      }
      if (zero === -1) break;
      dst[code] = run + 1;
      code = out++;
      run = 0;
      at = zero + 1;
    }
  }
  dst[code] = run + 1;
  return out;
}

/**
 * Decodes `src[0, length)` in place (the output is never longer than the
 * input). Returns the decoded length, or -1 if the encoding is invalid.
 */
export function cobsDecodeInPlace(src: Uint8Array, length: number): number {
  let read = 0;
  let write = 0;
  while (read < length) {
    const code = src[read];
    if (code === 0 || read + code > length) return -1;
    read++;
    src.copyWithin(write, read, read + code - 1);
    write += code - 1;
    read += code - 1;
    if (code !== 0xff && read < length) src[write++] = 0;
  }
  return write;
}
