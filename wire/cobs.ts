/**
 * Consistent Overhead Byte Stuffing: removes every 0x00 from a frame so 0x00
 * can delimit frames. Overhead is one byte per 254 bytes (at least one).
 * Runs between zeros are found with indexOf and moved with native copies:
 * this is the hot path of every byte on the wire.
 */

/** Largest encoded size of `length` input bytes, delimiter excluded. */
export function cobsMaxEncodedLength(length: number): number {
  return length + Math.ceil((length + 1) / 254);
}

/** Encodes `src` into `dst` at `offset`; returns the offset after the last byte written. */
export function cobsEncodeInto(src: Uint8Array, dst: Uint8Array, offset: number): number {
  const source = Buffer.from(src.buffer, src.byteOffset, src.length);
  let out = offset;
  let at = 0;
  for (;;) {
    const zero = source.indexOf(0, at);
    const end = zero === -1 ? source.length : zero;
    // The run [at, end) goes out in blocks of at most 254 bytes, each after its code byte.
    while (end - at >= 254) {
      dst[out++] = 0xff;
      dst.set(source.subarray(at, at + 254), out);
      out += 254;
      at += 254;
    }
    dst[out++] = end - at + 1;
    dst.set(source.subarray(at, end), out);
    out += end - at;
    if (zero === -1) return out;
    at = zero + 1;
  }
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
