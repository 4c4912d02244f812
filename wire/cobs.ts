/**
 * Consistent Overhead Byte Stuffing: removes every 0x00 from a frame so 0x00
 * can delimit frames. Overhead is one byte per 254 bytes (at least one).
 */

/** Largest encoded size of `length` input bytes, delimiter excluded. */
export function cobsMaxEncodedLength(length: number): number {
  return length + Math.ceil((length + 1) / 254);
}

/** Encodes `src` into `dst` at `offset`; returns the offset after the last byte written. */
export function cobsEncodeInto(src: Uint8Array, dst: Uint8Array, offset: number): number {
  let codeAt = offset;
  let out = offset + 1;
  let code = 1;
  for (let i = 0; i < src.length; i++) {
    const byte = src[i];
    if (byte === 0) {
      dst[codeAt] = code;
      codeAt = out++;
      code = 1;
      continue;
    }
    dst[out++] = byte;
    if (++code === 0xff) {
      dst[codeAt] = code;
      codeAt = out++;
      code = 1;
    }
  }
  dst[codeAt] = code;
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
    for (let k = 1; k < code; k++) src[write++] = src[read++];
    if (code !== 0xff && read < length) src[write++] = 0;
  }
  return write;
}
