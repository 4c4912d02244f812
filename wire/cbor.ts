/**
 * The CBOR codec: cbor-x, behind a structural check that every frame body
 * passes before cbor-x sees it. The check admits only what the protocol uses
 * (definite lengths, no tags, nesting of at most MAX_DEPTH) and makes sure
 * each declared length fits in the bytes left, so a hostile frame can neither
 * make the decoder allocate more than the frame's size nor reach cbor-x's
 * bignum (tags 2 and 3, quadratic time) or record extensions.
 *
 * cbor-x's build without eval: it neither generates code nor loads the
 * cbor-extract addon. The addon only speeds up decoding text; Tether's data
 * is bytes, and a 64 KiB output message or a START decoded as fast without
 * it. cbor-x took 4.7 MB of an empty Node's memory with the addon and 1.5 MB
 * without, and the single binary cannot carry an addon anyway.
 */
import type * as CborX from 'cbor-x';
import { TetherError } from './errors';

// (require: this project's moduleResolution predates package.json "exports", so TypeScript
// cannot resolve the subpath; its API is the main entry's.)
const { Decoder, Encoder } = require('cbor-x/index-no-eval') as typeof CborX;

export const MAX_DEPTH = 16;

// Maps encode as plain CBOR maps (no tag 259), so a Map with integer keys
// gives the compact integer-keyed maps of the handshake.
const encoder = new Encoder({
  useRecords: false,
  tagUint8Array: false,
  variableMapSize: true,
  mapsAsObjects: false,
});
// 8-byte integers (sequence numbers past 2^32) decode as numbers, not BigInt.
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true, int64AsNumber: true } as ConstructorParameters<typeof Decoder>[0]);

function fail(why: string): never {
  throw new TetherError('BAD_MESSAGE', `malformed CBOR: ${why}`);
}

/** Reads the argument of the head at `pos`; returns [value, next position]. */
function readArgument(buf: Uint8Array, pos: number, info: number): [number, number] {
  if (info < 24) return [info, pos];
  const size = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : 0;
  if (size === 0) fail(info === 31 ? 'indefinite length' : `reserved additional information ${info}`);
  if (pos + size > buf.length) fail('truncated');
  let value = 0;
  for (let i = 0; i < size; i++) value = value * 256 + buf[pos + i];
  return [value, pos + size];
}

/** Checks one data item starting at `pos`; returns the position after it. */
function checkItem(buf: Uint8Array, pos: number, depth: number): number {
  if (depth > MAX_DEPTH) fail('nested too deeply');
  if (pos >= buf.length) fail('truncated');
  const initial = buf[pos];
  const major = initial >> 5;
  const info = initial & 0x1f;
  if (major === 7) {
    // false, true, null, undefined, and half/single/double floats.
    if (info >= 20 && info <= 23) return pos + 1;
    const size = info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : 0;
    if (size === 0) fail(`simple value ${info}`);
    if (pos + 1 + size > buf.length) fail('truncated');
    return pos + 1 + size;
  }
  if (major === 6) fail('tags are not used by this protocol');
  const [arg, next] = readArgument(buf, pos + 1, info);
  switch (major) {
    case 0:
    case 1:
      return next;
    case 2:
    case 3:
      if (arg > buf.length - next) fail('string longer than the frame');
      return next + arg;
    case 4: {
      if (arg > buf.length - next) fail('array longer than the frame');
      let at = next;
      for (let i = 0; i < arg; i++) at = checkItem(buf, at, depth + 1);
      return at;
    }
    default: {
      if (arg * 2 > buf.length - next) fail('map longer than the frame');
      let at = next;
      for (let i = 0; i < arg * 2; i++) at = checkItem(buf, at, depth + 1);
      return at;
    }
  }
}

/**
 * Byte strings come out of cbor-x as views into the input, and a view keeps
 * all the memory behind it alive. One that is less than half of that memory
 * is copied out, so that what a side holds of a peer's message costs at most
 * twice what it counts (PROTOCOL.md 7.8): a 1-byte field followed by 60 KB of
 * ignored trailing items would otherwise keep the whole frame, or the 64 KiB
 * a compressed body inflated to, for as long as the field waits. Output that
 * fills its frame stays a view, without a copy.
 */
function detach(value: unknown): unknown {
  if (value instanceof Uint8Array) {
    if (2 * value.length >= value.buffer.byteLength) return value;
    const copy = Buffer.allocUnsafeSlow(value.length);
    copy.set(value);
    return copy;
  }
  if (Array.isArray(value)) {
    // every message is an array: an index loop, no list of keys (this runs for each message decoded)
    for (let i = 0; i < value.length; i++) value[i] = detach(value[i]);
  } else if (value !== null && typeof value === 'object') {
    // a map, as a plain object (cbor-x renames a "__proto__" key: all are own data properties)
    const map = value as Record<string, unknown>;
    for (const key of Object.keys(map)) map[key] = detach(map[key]);
  }
  return value;
}

/** Decodes a CBOR sequence (RFC 8742) after checking it. Throws TetherError BAD_MESSAGE. */
export function decodeSequence(buf: Uint8Array): unknown[] {
  let pos = 0;
  while (pos < buf.length) pos = checkItem(buf, pos, 0);
  let items: unknown[];
  try {
    items = decoder.decodeMultiple(buf) as unknown[];
  } catch (error) {
    fail((error as Error).message);
  }
  return detach(items) as unknown[];
}

/** Encodes items as a CBOR sequence: the items of an array, without the array's head. */
export function encodeSequence(items: unknown[]): Buffer {
  if (items.length < 24) return encoder.encode(items).subarray(1);
  return Buffer.concat(items.map((item) => encoder.encode(item)));
}

export function encodeItem(item: unknown): Buffer {
  return encoder.encode(item);
}

export function decodeItem(buf: Uint8Array): unknown {
  const items = decodeSequence(buf);
  if (items.length !== 1) fail(`expected one item, found ${items.length}`);
  return items[0];
}
