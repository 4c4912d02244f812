/**
 * The wire's CRC-32C and COBS written straight from their definitions
 * (PROTOCOL.md), slow and obvious: what the fast code in wire/ is checked against.
 */

/** Bit-at-a-time CRC-32C, straight from the definition. */
export function naiveCrc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** COBS encoding of one frame (no delimiter), a byte at a time, straight from the definition. */
export function naiveCobsEncode(data: Uint8Array): Buffer {
  const out: number[] = [0];
  let code = 0;
  for (const byte of data) {
    if (byte === 0) {
      out[code] = out.length - code;
      code = out.length;
      out.push(0);
      continue;
    }
    out.push(byte);
    if (out.length - code === 255) {
      out[code] = 0xff;
      code = out.length;
      out.push(0);
    }
  }
  out[code] = out.length - code;
  return Buffer.from(out);
}

/** COBS decoding of one frame (delimiter removed), straight from the definition. */
export function naiveCobsDecode(enc: Buffer): Buffer {
  const out: number[] = [];
  let i = 0;
  while (i < enc.length) {
    const code = enc[i++];
    if (code === 0 || i + code - 1 > enc.length) throw new Error('bad COBS');
    for (let k = 1; k < code; k++) out.push(enc[i++]);
    if (code < 0xff && i < enc.length) out.push(0);
  }
  return Buffer.from(out);
}
