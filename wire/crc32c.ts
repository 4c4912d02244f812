/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI and
 * SCTP. Every frame is checked on both sides, so this is on the hot path of
 * every byte: @node-rs/crc32 computes it with the CPU's CRC instructions
 * (SSE 4.2, ARMv8), about 5× the tables here. The single binary carries no
 * native addon, and a platform without a prebuilt one cannot load it: both
 * then use the slicing-by-8 tables, as do short inputs, where the call into
 * the addon costs more than the tables (break-even measured at ~256 bytes).
 */
import { createRequire } from 'node:module';

const POLY = 0x82f63b78;
const TABLES: Uint32Array[] = [];

for (let t = 0; t < 8; t++) TABLES.push(new Uint32Array(256));
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  TABLES[0][n] = c >>> 0;
}
for (let n = 0; n < 256; n++) {
  for (let t = 1; t < 8; t++) {
    const prev = TABLES[t - 1][n];
    TABLES[t][n] = (TABLES[0][prev & 0xff] ^ (prev >>> 8)) >>> 0;
  }
}
const [T0, T1, T2, T3, T4, T5, T6, T7] = TABLES;

type NativeCrc = (input: Uint8Array, initialState?: number) => number;

const NATIVE_MIN_BYTES = 256;
/** The standard check value: CRC-32C of "123456789". */
const CHECK = 0xe3069283;

function loadNative(): NativeCrc | null {
  try {
    // createRequire: the single binary's bundler must not see (and try to bundle) the addon.
    const { crc32c: native } = createRequire(__filename)('@node-rs/crc32') as { crc32c: NativeCrc };
    return native(Buffer.from('123456789')) === CHECK ? native : null;
  } catch {
    return null;
  }
}

const native = loadNative();

/** Which code computes CRC-32C in this process: 'native' (the CPU's instructions) or 'tables'. */
export const CRC32C_IMPLEMENTATION: 'native' | 'tables' = native ? 'native' : 'tables';

/** Continues a CRC-32C over `data[start, end)`; pass 0 to begin. */
export function crc32c(data: Uint8Array, crc = 0, start = 0, end = data.length): number {
  if (native && end - start >= NATIVE_MIN_BYTES) {
    return native(start === 0 && end === data.length ? data : data.subarray(start, end), crc);
  }
  return crc32cTables(data, crc, start, end);
}

/** crc32c() with the slicing-by-8 tables only (the fallback, and what tests compare the addon with). */
export function crc32cTables(data: Uint8Array, crc = 0, start = 0, end = data.length): number {
  let c = ~crc >>> 0;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    c ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    c =
      T7[c & 0xff] ^
      T6[(c >>> 8) & 0xff] ^
      T5[(c >>> 16) & 0xff] ^
      T4[c >>> 24] ^
      T3[data[i + 4]] ^
      T2[data[i + 5]] ^
      T1[data[i + 6]] ^
      T0[data[i + 7]];
  }
  for (; i < end; i++) c = T0[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
