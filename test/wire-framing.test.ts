/**
 * The framing layer: CRC-32C, COBS, the FrameReader (delimiting, size limit,
 * resynchronisation), and the Link's checks: the CRC (noise), then after the
 * handshake the tag and frame number (forgery, replay, reflection).
 */
import t from 'tap';
import { PassThrough } from 'node:stream';
import { cobsDecodeInPlace, cobsEncodeInto, cobsMaxEncodedLength } from '../wire/cobs';
import { CRC32C_IMPLEMENTATION, crc32c, crc32cTables } from '../wire/crc32c';
import { FrameAuth, deriveKeys, nearestNumber, nextNumber } from '../wire/frame-auth';
import {
  FrameReader,
  HANDSHAKE_MAX_BODY,
  TRAILER_BYTES,
  authenticatedParts,
  encodeAuthenticatedFrame,
  encodeHandshakeFrame,
  isSequencedBody,
} from '../wire/framing';
import { FORGED_FRAME_BUDGET, Link } from '../wire/link';
import { MsgType, decodeMessage, encodeMessage } from '../wire/messages';
import { naiveCobsEncode, naiveCrc32c } from './helpers/naive-wire';
import { Rng } from './helpers/wire-net';
import { tick } from './helpers/support';

function cobsEncode(data: Uint8Array): Buffer {
  const out = Buffer.alloc(cobsMaxEncodedLength(data.length));
  return out.subarray(0, cobsEncodeInto(data, out, 0));
}

function cobsDecode(encoded: Uint8Array): Buffer | null {
  const copy = Buffer.from(encoded);
  const n = cobsDecodeInPlace(copy, copy.length);
  return n < 0 ? null : copy.subarray(0, n);
}

/** A frame of body || CRC with a CRC that does not match. */
function badCrcFrame(body: Buffer): Buffer {
  const raw = Buffer.concat([body, Buffer.alloc(4)]);
  raw.writeUInt32LE((naiveCrc32c(body) ^ 0x5a5a5a5a) >>> 0, body.length);
  return Buffer.concat([cobsEncode(raw), Buffer.from([0])]);
}

const NONCE_A = Buffer.alloc(32, 1);
const NONCE_M = Buffer.alloc(32, 2);
const keys = deriveKeys(Buffer.from('sesame'), NONCE_A, NONCE_M);
/** The master's side: it tags what the links under test (agents) receive. */
const master = new FrameAuth(keys, 'master');

const ping = (token: number) => encodeHandshakeFrame(encodeMessage({ type: MsgType.PING, token }));
/** A frame as the master sends it after the handshake, tagged at `number` (with `by`'s key). */
const tagged = (body: Buffer, number: number, by = master) => encodeAuthenticatedFrame(body, number % 0x10000, by.tag(number, body));
const stdoutBody = (text: string) => encodeMessage({ type: 'output', stream: 0, channel: 0, data: Buffer.from(text) });
const stdout = (text: string, seq: number) => tagged(stdoutBody(text), seq);

function collect(reader: FrameReader): { frames: Buffer[]; invalid: string[] } {
  const got = { frames: [] as Buffer[], invalid: [] as string[] };
  reader.on('frame', (f: Buffer) => got.frames.push(f));
  reader.on('invalid', (why: string) => got.invalid.push(why));
  return got;
}

/**
 * A Link fed through a PassThrough, with the bodies it hands on; with
 * `authenticated`, as an agent's link after the handshake, expecting
 * sequenced frames from `expected.seq` on (the test moves it).
 */
function linkHarness(maxBody?: number, authenticated = false) {
  const stream = new PassThrough();
  const written: Buffer[] = [];
  const link = new Link(stream, { maxBody });
  const expected = { seq: 0 };
  if (authenticated) link.authenticate(new FrameAuth(keys, 'agent'), () => expected.seq);
  const frames: Array<{ body: Buffer; number: number | null; sequenced: boolean }> = [];
  const corrupt: string[] = [];
  const forged: number[] = [];
  link.on('frame', (body: Buffer, number: number | null, sequenced: boolean) => frames.push({ body, number, sequenced }));
  link.on('corrupt', (why: string) => corrupt.push(why));
  link.on('forged', (count: number) => forged.push(count));
  const write = stream.write.bind(stream);
  // What the link writes goes to `written`; what the test feeds goes to the reader.
  stream.write = ((chunk: Buffer, ...rest: unknown[]) => {
    written.push(chunk);
    const done = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    done?.();
    return true;
  }) as typeof stream.write;
  return {
    link,
    frames,
    corrupt,
    forged,
    written,
    expected,
    async feed(bytes: Buffer) {
      write(bytes);
      await tick();
    },
  };
}

// ---- CRC-32C ---------------------------------------------------------------------

t.test('CRC-32C: the standard check value and known vectors', async (t) => {
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283, 'check value of "123456789"');
  t.equal(crc32c(Buffer.alloc(0)), 0, 'empty input');
  // RFC 3720 (iSCSI) appendix B.4.
  t.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa, '32 bytes of 0x00');
  t.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43, '32 bytes of 0xff');
  t.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e, '32 ascending bytes');
  t.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c, '32 descending bytes');
});

t.test('CRC-32C: the addon and slicing-by-8 equal the bitwise definition at every length, alignment and seed', async (t) => {
  const rng = new Rng(1);
  let mismatches = 0;
  const lengths = [...Array.from({ length: 300 }, (_, n) => n), ...Array.from({ length: 40 }, () => 300 + rng.int(70_000))];
  for (const n of lengths) {
    const data = rng.bytes(n);
    const whole = naiveCrc32c(data);
    if (crc32c(data) !== whole || crc32cTables(data) !== whole) mismatches++;
    const start = rng.int(n + 1);
    const end = start + rng.int(n - start + 1);
    const part = naiveCrc32c(data.subarray(start, end));
    if (crc32c(data, 0, start, end) !== part || crc32cTables(data, 0, start, end) !== part) mismatches++;
    const cut = rng.int(n + 1);
    if (crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))) !== whole) mismatches++;
    if (crc32cTables(data.subarray(cut), crc32cTables(data.subarray(0, cut))) !== whole) mismatches++;
  }
  t.equal(mismatches, 0, `${lengths.length} inputs up to ${Math.max(...lengths)} bytes`);
});

t.test('CRC-32C: the CPU instructions, through @node-rs/crc32, where it ships a prebuilt addon', async (t) => {
  // Its prebuilt addons cover Linux on x64, arm64 and armv7 (glibc): there the tables would be a silent slowdown.
  const prebuilt = process.platform === 'linux' && ['x64', 'arm64', 'arm'].includes(process.arch);
  t.equal(CRC32C_IMPLEMENTATION, prebuilt ? 'native' : 'tables', `${process.platform}-${process.arch}: ${CRC32C_IMPLEMENTATION}`);
});

t.test('an authenticated frame: CRC over 0x02 || body || number || tag; tag over number (64 bits, LE) || body', async (t) => {
  const body = stdoutBody('0123456789');
  for (const number of [0, 1, 255, 256, 0xffff, 0x10000, 0xffffffff, 0x100000005, 2 ** 53 - 1]) {
    const frame = cobsDecode(tagged(body, number).subarray(0, -1))!;
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(number));
    const parts = authenticatedParts(frame)!;
    t.equal(parts.low, number % 0x10000, `number ${number}: its low 16 bits, little-endian`);
    t.equal(frame.readUInt32LE(frame.length - 4), naiveCrc32c(Buffer.concat([Buffer.from([2]), frame.subarray(0, -4)])), `number ${number}: CRC`);
    t.ok(new FrameAuth(keys, 'agent').verify(number, body, parts.tag), `number ${number}: the agent checks the master's tag`);
  }
  t.equal(TRAILER_BYTES, 14, 'number 2 + tag 8 + CRC 4');
  const handshake = cobsDecode(encodeHandshakeFrame(body).subarray(0, -1))!;
  t.equal(handshake.readUInt32LE(handshake.length - 4), naiveCrc32c(body), 'a handshake frame: CRC over the body alone');
  t.equal(authenticatedParts(handshake), null, 'which fails as an authenticated frame');
});

t.test('frame numbers from their low 16 bits', async (t) => {
  t.equal(nearestNumber(5, 5), 5);
  t.equal(nearestNumber(0xffff, 0x10000), 0xffff, 'just below, across the 16-bit boundary');
  t.equal(nearestNumber(2, 0xfffe), 0x10002, 'just above, across it');
  t.equal(nearestNumber(0x0005, 0x100000000), 0x100000005, 'high words come from the expected number');
  t.equal(nearestNumber(0xffff, 0), 0xffff, 'never below 0');
  t.equal(nextNumber(3, 3), 3, 'link frames: the next expected');
  t.equal(nextNumber(10, 3), 10, 'or later (lost ones leave a gap)');
  t.equal(nextNumber(2, 3), 0x10002, 'never earlier: an older number means 2^16 later, which its tag will not fit');
});

// ---- COBS ------------------------------------------------------------------------

t.test('COBS: known encodings', async (t) => {
  const cases: Array<[string, string]> = [
    ['', '01'],
    ['00', '0101'],
    ['0000', '010101'],
    ['11220033', '03112202 33'.replace(' ', '')],
    ['11223344', '0511223344'],
    ['11000000', '0211010101'],
  ];
  for (const [input, encoded] of cases) {
    t.equal(cobsEncode(Buffer.from(input, 'hex')).toString('hex'), encoded, `encode ${input || '(empty)'}`);
    t.equal(cobsDecode(Buffer.from(encoded, 'hex'))!.toString('hex'), input, `decode ${encoded}`);
  }
  const run254 = Buffer.from(Array.from({ length: 254 }, (_, i) => i + 1));
  t.equal(
    cobsEncode(run254).toString('hex'),
    'ff' + run254.toString('hex') + '01',
    '254 non-zero bytes: a full block, then the reference adds an empty final block (code 0x01)',
  );
  t.equal(cobsDecode(Buffer.concat([Buffer.from([0xff]), run254]))!.toString('hex'), run254.toString('hex'), 'the minimal form (no final 0x01) decodes too');
  const run255 = Buffer.from(Array.from({ length: 255 }, (_, i) => (i % 255) + 1));
  t.equal(cobsEncode(run255).toString('hex'), 'ff' + run255.subarray(0, 254).toString('hex') + '02' + run255.subarray(254).toString('hex'));
  t.equal(cobsDecode(Buffer.from('0511', 'hex')), null, 'a code past the end is invalid');
  t.equal(cobsDecode(Buffer.from('021100', 'hex')), null, 'a 0x00 code is invalid');
});

t.test('COBS: random round trips, including 0-heavy data and 254/255-byte runs', async (t) => {
  const rng = new Rng(2);
  const inputs: Buffer[] = [];
  for (let n = 0; n < 1100; n++) inputs.push(rng.bytes(n % 600));
  for (let n = 0; n < 300; n++) {
    const b = rng.bytes(rng.int(800));
    for (let i = 0; i < b.length; i++) if (rng.next() < 0.7) b[i] = 0; // 0-heavy
    inputs.push(b);
  }
  for (const len of [1, 253, 254, 255, 256, 507, 508, 509, 510, 762, 1016, 1024, 1028]) {
    inputs.push(Buffer.from(Array.from({ length: len }, (_, i) => (i % 255) + 1)), Buffer.alloc(len, 0));
    const withZeroAt = Buffer.alloc(len + 1, 0x55);
    withZeroAt[len] = 0;
    inputs.push(withZeroAt, Buffer.concat([Buffer.from([0]), Buffer.alloc(len, 0x42)]));
  }
  let bad = 0;
  for (const input of inputs) {
    const encoded = cobsEncode(input);
    if (encoded.includes(0)) bad++;
    if (encoded.length > cobsMaxEncodedLength(input.length)) bad++;
    if (encoded.length < input.length + 1) bad++;
    const back = cobsDecode(encoded);
    if (!back || !back.equals(input)) bad++;
  }
  t.equal(bad, 0, `${inputs.length} inputs round-trip, no 0x00 in any encoding, within cobsMaxEncodedLength`);
});

t.test('COBS: the encoding of a frame given in parts is the textbook one, byte for byte', async (t) => {
  const rng = new Rng(7);
  let bad = 0;
  let count = 0;
  for (let n = 0; n < 2000; n++) {
    const length = n < 1100 ? n : rng.int(70_000);
    const data = rng.bytes(length);
    // Few zeros (long runs, as in text), many zeros, or random bytes.
    const kind = n % 3;
    for (let i = 0; i < length; i++) {
      if (kind === 0 && data[i] === 0 && rng.int(64) !== 0) data[i] = 1;
      else if (kind === 1 && rng.int(4) === 0) data[i] = 0;
    }
    const cuts = Array.from({ length: rng.int(4) }, () => rng.int(length + 1)).sort((a, b) => a - b);
    const parts = [0, ...cuts].map((from, i) => data.subarray(from, i < cuts.length ? cuts[i] : length));
    const out = Buffer.alloc(cobsMaxEncodedLength(length) + 3, 0xee);
    const end = cobsEncodeInto(parts, out, 3);
    if (!out.subarray(3, end).equals(naiveCobsEncode(data)) || !out.subarray(0, 3).equals(Buffer.alloc(3, 0xee))) bad++;
    count++;
  }
  t.equal(bad, 0, `${count} frames of up to 70 000 bytes, in 1 to 4 parts, at an offset`);
});

// ---- FrameReader -----------------------------------------------------------------

t.test('FrameReader: frames split at 0x00, delivered whole whatever the chunking', async (t) => {
  const frames = [ping(1), stdout('hello', 0), encodeHandshakeFrame(Buffer.alloc(900, 0)), stdout('x'.repeat(1000), 1)];
  const stream = Buffer.concat(frames);
  const expected = frames.map((f) => cobsDecode(f.subarray(0, -1))!.toString('hex'));

  const whole = new FrameReader(1024);
  const a = collect(whole);
  whole.feed(stream);
  t.same(a.frames.map((f) => f.toString('hex')), expected, 'in one chunk');

  const bytewise = new FrameReader(1024);
  const b = collect(bytewise);
  for (const byte of stream) bytewise.feed(Buffer.from([byte]));
  t.same(b.frames.map((f) => f.toString('hex')), expected, 'byte by byte');

  const rng = new Rng(3);
  const random = new FrameReader(1024);
  const c = collect(random);
  for (let at = 0; at < stream.length; ) {
    const n = 1 + rng.int(40);
    random.feed(stream.subarray(at, at + n));
    at += n;
  }
  t.same(c.frames.map((f) => f.toString('hex')), expected, 'in random chunks');
  t.same([a.invalid, b.invalid, c.invalid], [[], [], []], 'nothing invalid');
});

t.test('FrameReader: empty frames (repeated delimiters) are ignored, not counted', async (t) => {
  const reader = new FrameReader();
  const got = collect(reader);
  reader.feed(Buffer.concat([Buffer.from([0, 0, 0]), ping(1), Buffer.from([0, 0]), ping(2)]));
  t.equal(got.frames.length, 2);
  t.same(reader.stats, { frames: 2, malformed: 0, oversize: 0 });
});

t.test('Link: resynchronises after leading garbage', async (t) => {
  const rng = new Rng(4);
  const garbage = Buffer.from(rng.bytes(300).map((b) => b || 1)); // no 0x00: it runs into the first frame
  {
    const h = linkHarness();
    await h.feed(Buffer.concat([garbage, ping(1), ping(2), ping(3)]));
    t.same(h.frames.map((f) => decodeMessage(f.body)), [{ type: MsgType.PING, token: 2 }, { type: MsgType.PING, token: 3 }],
      'garbage without a delimiter swallows the first frame; the next ones arrive');
    t.equal(h.link.stats.crcErrors + h.link.stats.badFrames, 1, 'the garbage+frame is counted once');
  }
  {
    const h = linkHarness();
    await h.feed(Buffer.concat([garbage, Buffer.from([0]), ping(1), ping(2)]));
    t.equal(h.frames.length, 2, 'a 0x00 before the first frame (what a serial sender does) saves it');
  }
});

t.test('Link: garbage between frames costs only the garbage, and is never taken for a forgery', async (t) => {
  const rng = new Rng(5);
  const h = linkHarness(undefined, true);
  const parts: Buffer[] = [];
  for (let i = 0; i < 50; i++) {
    parts.push(stdout(`frame ${i}`, i));
    parts.push(rng.bytes(1 + rng.int(200)), Buffer.from([0])); // garbage, possibly with its own zeros
  }
  h.link.on('frame', (_body: Buffer, number: number | null) => {
    if (number !== null) h.expected.seq = number + 1;
  });
  await h.feed(Buffer.concat(parts));
  t.same(h.frames.map((f) => decodeMessage(f.body)).map((m) => (m.type === 'output' ? m.data.toString() : '?')),
    Array.from({ length: 50 }, (_, i) => `frame ${i}`), 'all 50 frames, in order');
  t.same(h.frames.map((f) => f.number), Array.from({ length: 50 }, (_, i) => i), 'each with its number');
  t.ok(h.link.stats.crcErrors + h.link.stats.badFrames >= 50, 'every piece of garbage is counted as noise');
  t.equal(h.link.stats.forged, 0, 'none as forged');
  t.notOk(h.link.isClosed);
});

t.test('Link: a frame with a bad CRC is counted and never handed on', async (t) => {
  const h = linkHarness();
  const body = encodeMessage({ type: MsgType.PING, token: 7 });
  await h.feed(badCrcFrame(body));
  t.equal(h.frames.length, 0, 'no frame event');
  t.equal(h.link.stats.crcErrors, 1, 'stats.crcErrors');
  t.same(h.corrupt, ['crc']);

  // Flip each bit of a valid authenticated frame in turn (re-stuffed, so COBS stays valid): all refused, as noise.
  const auth = linkHarness(undefined, true);
  const valid = cobsDecode(stdout('x', 0).subarray(0, -1))!;
  let accepted = 0;
  for (let bit = 0; bit < valid.length * 8; bit++) {
    const raw = Buffer.from(valid);
    raw[bit >> 3] ^= 1 << (bit & 7);
    const before = auth.frames.length;
    await auth.feed(Buffer.concat([cobsEncode(raw), Buffer.from([0])]));
    if (auth.frames.length !== before) accepted++;
  }
  t.equal(accepted, 0, `none of ${valid.length * 8} single-bit errors gets through`);
  t.equal(auth.link.stats.crcErrors + auth.link.stats.badFrames, valid.length * 8, 'each counted as noise');
  t.equal(auth.link.stats.forged, 0, 'none as forged: the CRC caught them before the tag was looked at');
  await auth.feed(stdout('y', 0));
  t.equal(decodeMessage(auth.frames[0].body).type, 'output', 'the next good frame is accepted');
});

t.test('Link: a frame shorter than its trailer is dropped as bad', async (t) => {
  const h = linkHarness();
  await h.feed(Buffer.from([0x02, 0x05, 0x01, 0x00])); // decodes to 05 00 00: 3 bytes
  t.equal(h.frames.length, 0);
  t.equal(h.link.stats.badFrames, 1);
  t.same(h.corrupt, ['short']);
});

t.test('Link: a handshake body over the limit is dropped as oversize, even when its encoding fits the buffer', async (t) => {
  const h = linkHarness(64);
  const body = Buffer.alloc(70, 0);
  body[0] = MsgType.PING;
  await h.feed(encodeHandshakeFrame(body));
  t.same(h.corrupt, ['oversize']);
  t.equal(h.frames.length, 0);
});

t.test('Link: after the handshake, only frames with the right tag at the right number get through', async (t) => {
  const h = linkHarness(undefined, true);
  const body = stdoutBody('run me');
  h.expected.seq = 5;
  await h.feed(tagged(body, 5));
  t.same(h.frames.map((f) => f.number), [5], 'the expected frame, with its number');
  const agent = new FrameAuth(keys, 'agent');
  const stranger = new FrameAuth(deriveKeys(Buffer.from('sesame'), NONCE_A, Buffer.alloc(32, 3)), 'master');
  const forgeries: Array<[string, Buffer]> = [
    ['a frame tagged for another number (moved)', encodeAuthenticatedFrame(body, 6, master.tag(7, body))],
    ['a frame reflected back (the agent\'s own key)', tagged(body, 5, agent)],
    ['a frame from another connection (other nonces)', tagged(body, 5, stranger)],
  ];
  for (const [why, frame] of forgeries) {
    const before = h.link.stats.forged;
    await h.feed(frame);
    t.equal(h.link.stats.forged, before + 1, `${why}: forged`);
  }
  t.equal(h.frames.length, 1, 'none of them handed on');
  t.notOk(h.link.isClosed, `under ${FORGED_FRAME_BUDGET} forged frames the link stays`);
  await h.feed(tagged(encodeMessage({ type: MsgType.PING, token: 1 }), 0));
  t.same(h.frames.map((f) => f.number), [5, 0], 'link frames have numbers of their own');
  await h.feed(tagged(encodeMessage({ type: MsgType.PING, token: 1 }), 0));
  t.equal(h.link.stats.forged, FORGED_FRAME_BUDGET, 'a link frame replayed: forged (the next one expected is 1)');
  t.ok(h.link.isClosed, `${FORGED_FRAME_BUDGET} forged frames close the link`);
  const far = linkHarness(undefined, true);
  far.expected.seq = 5;
  await far.feed(encodeAuthenticatedFrame(body, 5, master.tag(5 + 0x10000, body)));
  t.same([far.link.stats.forged, far.frames.length], [1, 0], 'a frame 2^16 away (same bits on the wire): forged');
  t.same(h.written, [], 'as a broken connection closes, without ERROR: a resumable session resumes with new keys');
});

t.test('Link: a handshake frame after the handshake is noise, not a forgery; but an ERROR is taken while the agent waits for WELCOME', async (t) => {
  const h = linkHarness(undefined, true);
  await h.feed(encodeHandshakeFrame(encodeMessage({ type: MsgType.ERROR, code: 7, message: 'a handshake error' })));
  t.same([h.link.stats.crcErrors, h.link.stats.forged, h.frames.length], [1, 0, 0]);
  const waiting = linkHarness();
  waiting.link.authenticate(new FrameAuth(keys, 'agent'), () => 0, true);
  await waiting.feed(encodeHandshakeFrame(encodeMessage({ type: MsgType.ERROR, code: 7, message: 'wrong secret' })));
  t.same(waiting.frames.map((f) => [decodeMessage(f.body).type, f.number]), [[MsgType.ERROR, null]], 'the handshake ERROR');
  await waiting.feed(tagged(encodeMessage({ type: MsgType.PING, token: 1 }), 0));
  await waiting.feed(encodeHandshakeFrame(encodeMessage({ type: MsgType.ERROR, code: 7, message: 'too late' })));
  t.equal(waiting.frames.length, 2, 'after the first authenticated frame, a handshake ERROR is noise');
});

t.test('FrameReader: an oversize frame is dropped without the buffer growing, then the next frame is read', async (t) => {
  const reader = new FrameReader(HANDSHAKE_MAX_BODY);
  const got = collect(reader);
  const buffer = () => (reader as unknown as { buffer: Buffer }).buffer;
  const fixed = buffer();
  t.equal(fixed.length, cobsMaxEncodedLength(HANDSHAKE_MAX_BODY + TRAILER_BYTES), 'one frame of buffer (with the longest trailer)');

  const rng = new Rng(6);
  const heapBefore = process.memoryUsage().arrayBuffers;
  for (let i = 0; i < 1024; i++) reader.feed(Buffer.from(rng.bytes(1024).map((b) => b || 7))); // 1 MiB without a delimiter
  t.equal(buffer(), fixed, 'the same buffer object');
  t.equal(buffer().length, fixed.length, 'not grown');
  t.equal(got.frames.length, 0);
  reader.feed(Buffer.concat([Buffer.from([0]), ping(1)]));
  t.same(got.invalid, ['oversize'], 'counted once, at its delimiter');
  t.equal(reader.stats.oversize, 1);
  t.equal(got.frames.length, 1, 'the next frame is accepted');
  t.ok(process.memoryUsage().arrayBuffers - heapBefore < 8 * 1024 * 1024, 'no megabytes retained');
});

t.test('FrameReader: the body limit', async (t) => {
  const nonZero = (n: number) => Buffer.alloc(n, 0x41);
  {
    const reader = new FrameReader(1024);
    const got = collect(reader);
    reader.feed(encodeAuthenticatedFrame(nonZero(1024), 1, Buffer.alloc(8, 1)));
    t.equal(got.frames.length, 1, 'a 1024-byte body without 0x00 (worst-case COBS), with its trailer, is accepted at limit 1024');
    reader.feed(encodeAuthenticatedFrame(nonZero(1025), 1, Buffer.alloc(8, 1)));
    t.same(got.invalid, ['oversize'], 'a 1025-byte body without 0x00 is refused');
    reader.feed(encodeHandshakeFrame(Buffer.alloc(2000, 0)));
    t.same(got.invalid, ['oversize', 'oversize'], 'a 2000-byte body of zeros is refused');
    reader.feed(ping(1));
    t.equal(got.frames.length, 2, 'and the reader goes on');
  }
  {
    const reader = new FrameReader(1024);
    const got = collect(reader);
    reader.setMaxBody(64 * 1024);
    reader.feed(encodeHandshakeFrame(nonZero(60_000)));
    t.equal(got.frames.length, 1, 'setMaxBody raises the limit (after the handshake)');
    reader.setMaxBody(64);
    reader.feed(encodeAuthenticatedFrame(nonZero(65), 1, Buffer.alloc(8, 1)));
    t.same(got.invalid, ['oversize'], 'and lowers it');
  }
  {
    // A frame a few bytes over the limit but full of 0x00 encodes to no more than the
    // buffer holds: the decoded size must be checked as well as the encoded one.
    const reader = new FrameReader(1024);
    const got = collect(reader);
    const body = Buffer.alloc(1028, 0);
    body[0] = 0x0f;
    const frame = encodeAuthenticatedFrame(body, 0, Buffer.alloc(8));
    t.ok(frame.length - 1 <= cobsMaxEncodedLength(1024 + TRAILER_BYTES), 'its encoding fits the buffer');
    reader.feed(frame);
    t.equal(got.frames.length, 0, 'a 1028-byte body of 0x00 is refused at limit 1024');
    t.same(got.invalid, ['oversize']);
    const exact = Buffer.alloc(1024, 0);
    exact[0] = 0x0f;
    reader.feed(encodeAuthenticatedFrame(exact, 0, Buffer.alloc(8)));
    t.equal(got.frames.length, 1, 'a 1024-byte one is accepted');
  }
});

t.test('COBS from parts: a frame is never joined before it is encoded', async (t) => {
  const rng = new Rng(9);
  let bad = 0;
  for (let i = 0; i < 500; i++) {
    const parts = Array.from({ length: 1 + rng.int(4) }, () => {
      const b = rng.bytes(rng.int(600));
      for (let k = 0; k < b.length; k++) if (rng.next() < 0.2) b[k] = 0;
      return b;
    });
    const joined = Buffer.concat(parts);
    const out = Buffer.alloc(cobsMaxEncodedLength(joined.length));
    if (!out.subarray(0, cobsEncodeInto(parts, out, 0)).equals(cobsEncode(joined))) bad++;
  }
  t.equal(bad, 0, 'the same bytes as the joined input');
});

t.test('isSequencedBody: the first body byte classifies the frame', async (t) => {
  for (let type = 1; type <= 23; type++) {
    const body = Buffer.from([type < 24 ? type : 0]);
    t.equal(isSequencedBody(body), type >= 10, `type ${type}`);
  }
  t.ok(isSequencedBody(Buffer.from([0x20])), 'output head (negative integer)');
  t.notOk(isSequencedBody(Buffer.from([0x00])), 'type 0 would be a link frame');
});
