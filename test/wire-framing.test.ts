/**
 * The framing layer: CRC-32C, COBS, the FrameReader (delimiting, size limit,
 * resynchronisation) and the Link's CRC check with implicit sequence numbers.
 */
import t from 'tap';
import { PassThrough } from 'node:stream';
import { cobsDecodeInPlace, cobsEncodeInto, cobsMaxEncodedLength } from '../wire/cobs';
import { crc32c } from '../wire/crc32c';
import {
  CRC_BYTES,
  FrameReader,
  HANDSHAKE_MAX_BODY,
  checkFrame,
  sequenceOffset,
  encodeFrame,
  frameCrc,
  isSequencedBody,
} from '../wire/framing';
import { Link } from '../wire/link';
import { MsgType, decodeMessage, encodeMessage } from '../wire/messages';
import { naiveCrc32c } from './helpers/naive-wire';
import { Rng, tick } from './helpers/wire-net';

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
  raw.writeUInt32LE((frameCrc(body, null) ^ 0x5a5a5a5a) >>> 0, body.length);
  return Buffer.concat([cobsEncode(raw), Buffer.from([0])]);
}

const ping = (token: number) => encodeFrame(encodeMessage({ type: MsgType.PING, token }), null);
const stdout = (text: string, seq: number) =>
  encodeFrame(encodeMessage({ type: 'output', stream: 0, channel: 0, data: Buffer.from(text) }), seq);

function collect(reader: FrameReader): { frames: Buffer[]; invalid: string[] } {
  const got = { frames: [] as Buffer[], invalid: [] as string[] };
  reader.on('frame', (f: Buffer) => got.frames.push(f));
  reader.on('invalid', (why: string) => got.invalid.push(why));
  return got;
}

/** A Link fed through a PassThrough, with the bodies it hands on. */
function linkHarness(maxBody?: number, lossy = false) {
  const stream = new PassThrough();
  const link = new Link(stream, { maxBody, lossy });
  const frames: Array<{ body: Buffer; sequenced: boolean }> = [];
  const corrupt: string[] = [];
  link.on('frame', (body: Buffer, sequenced: boolean) => frames.push({ body, sequenced }));
  link.on('corrupt', (why: string) => corrupt.push(why));
  return {
    link,
    frames,
    corrupt,
    async feed(bytes: Buffer) {
      stream.write(bytes);
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

t.test('CRC-32C: slicing-by-8 equals the bitwise definition at every length and alignment', async (t) => {
  const rng = new Rng(1);
  let mismatches = 0;
  for (let n = 0; n < 300; n++) {
    const data = rng.bytes(n);
    if (crc32c(data) !== naiveCrc32c(data)) mismatches++;
    const start = rng.int(n + 1);
    const end = start + rng.int(n - start + 1);
    if (crc32c(data, 0, start, end) !== naiveCrc32c(data.subarray(start, end))) mismatches++;
    const cut = rng.int(n + 1);
    if (crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))) !== crc32c(data)) mismatches++;
  }
  t.equal(mismatches, 0);
});

t.test('the frame CRC covers the implicit sequence number as 8 little-endian bytes', async (t) => {
  const body = encodeMessage({ type: 'output', stream: 0, channel: 0, data: Buffer.from('0123456789') });
  for (const seq of [0, 1, 255, 256, 0xffffffff, 0x100000005, 2 ** 53 - 1]) {
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(seq));
    t.equal(frameCrc(body, seq), naiveCrc32c(Buffer.concat([prefix, body])), `seq ${seq}`);
  }
  t.equal(frameCrc(body, null), naiveCrc32c(body), 'link frames: the body alone');
  t.not(frameCrc(body, 0), frameCrc(body, null), 'seq 0 still changes the CRC');
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

// ---- FrameReader -----------------------------------------------------------------

t.test('FrameReader: frames split at 0x00, delivered whole whatever the chunking', async (t) => {
  const frames = [ping(1), stdout('hello', 0), encodeFrame(Buffer.alloc(900, 0), null), stdout('x'.repeat(1000), 1)];
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

t.test('Link: garbage between frames costs only the garbage', async (t) => {
  const rng = new Rng(5);
  const h = linkHarness();
  const parts: Buffer[] = [];
  for (let i = 0; i < 50; i++) {
    parts.push(stdout(`frame ${i}`, i));
    parts.push(rng.bytes(1 + rng.int(200)), Buffer.from([0])); // garbage, possibly with its own zeros
  }
  h.link.on('frame', (_body: Buffer, sequenced: boolean) => {
    if (sequenced) h.link.expectedSeq++;
  });
  await h.feed(Buffer.concat(parts));
  t.same(h.frames.map((f) => decodeMessage(f.body)).map((m) => (m.type === 'output' ? m.data.toString() : '?')),
    Array.from({ length: 50 }, (_, i) => `frame ${i}`), 'all 50 frames, in order');
  t.ok(h.link.stats.crcErrors + h.link.stats.badFrames >= 50, 'every piece of garbage is counted');
});

t.test('Link: a frame with a bad CRC is counted and never handed on', async (t) => {
  const h = linkHarness();
  const body = encodeMessage({ type: MsgType.PING, token: 7 });
  await h.feed(badCrcFrame(body));
  t.equal(h.frames.length, 0, 'no frame event');
  t.equal(h.link.stats.crcErrors, 1, 'stats.crcErrors');
  t.same(h.corrupt, ['crc']);

  // Flip each bit of a valid frame's body in turn (re-stuffed, so COBS stays valid): all refused.
  const valid = Buffer.concat([body, Buffer.alloc(4)]);
  valid.writeUInt32LE(frameCrc(body, null), body.length);
  let accepted = 0;
  for (let bit = 0; bit < valid.length * 8; bit++) {
    const raw = Buffer.from(valid);
    raw[bit >> 3] ^= 1 << (bit & 7);
    const before = h.frames.length;
    await h.feed(Buffer.concat([cobsEncode(raw), Buffer.from([0])]));
    if (h.frames.length !== before) accepted++;
  }
  t.equal(accepted, 0, `none of ${valid.length * 8} single-bit errors gets through`);
  t.equal(h.link.stats.crcErrors + h.link.stats.badFrames, 1 + valid.length * 8);
  await h.feed(ping(8));
  t.same(decodeMessage(h.frames[0].body), { type: MsgType.PING, token: 8 }, 'the next good frame is accepted');
});

t.test('Link: a frame shorter than a CRC is dropped as bad', async (t) => {
  const h = linkHarness();
  await h.feed(Buffer.from([0x02, 0x05, 0x01, 0x00])); // decodes to 05 00 00: 3 bytes
  t.equal(h.frames.length, 0);
  t.equal(h.link.stats.badFrames, 1);
  t.same(h.corrupt, ['short']);
});

t.test('Link: the implicit sequence number must be the one expected', async (t) => {
  const h = linkHarness();
  h.link.expectedSeq = 5;
  await h.feed(Buffer.concat([stdout('four', 4), stdout('six', 6), stdout('2^32+5', 0x100000005)]));
  t.equal(h.frames.length, 0, 'seq 4, 6 and 2^32+5 refused while 5 is expected');
  t.equal(h.link.stats.crcErrors, 3);
  await h.feed(Buffer.concat([stdout('five', 5), ping(1)]));
  t.equal(h.frames.length, 2, 'seq 5 accepted; link frames need no number');
  t.same(h.frames.map((f) => f.sequenced), [true, false]);
  t.equal(h.link.expectedSeq, 5, 'the Link does not advance the number itself (the Session does)');
  const f = stdout('again', 9);
  t.ok(checkFrame(cobsDecode(f.subarray(0, -1))!, 9).ok);
  t.notOk(checkFrame(cobsDecode(f.subarray(0, -1))!, 10).ok, 'a replayed frame fails at any later number');
});

t.test('Link on a lossy line: a frame sent again or after a lost one is told apart from a damaged one', async (t) => {
  const h = linkHarness(undefined, true);
  const placed: string[] = [];
  h.link.on('duplicate', () => placed.push('duplicate'));
  h.link.on('ahead', (offset: number) => placed.push(`ahead ${offset}`));
  h.link.expectedSeq = 200;
  await h.feed(Buffer.concat([199, 72, 71, 201, 202, 328, 329].map((seq) => stdout(String(seq), seq))));
  t.same(placed, ['duplicate', 'duplicate', 'ahead 1', 'ahead 2', 'ahead 128'], 'up to 128 either side of 200 is placed');
  t.same(h.corrupt, ['crc', 'crc'], '71 and 329 are too far to tell: they count as damage');
  t.same([h.link.stats.duplicates, h.link.stats.ahead, h.link.stats.crcErrors], [2, 3, 2]);
  const damaged = stdout('201', 201);
  damaged[3] ^= 0x10;
  await h.feed(damaged);
  t.same([h.link.stats.duplicates, h.link.stats.ahead, h.link.stats.crcErrors], [2, 3, 3], 'a damaged copy is damage');
  t.equal(h.frames.length, 0, 'nothing was handed on');

  const reliable = linkHarness();
  reliable.link.expectedSeq = 200;
  await reliable.feed(Buffer.concat([stdout('199', 199), stdout('201', 201)]));
  t.same([reliable.link.stats.duplicates, reliable.link.stats.ahead, reliable.link.stats.crcErrors], [0, 0, 2], 'TCP never sends again: no search');
});

t.test('sequenceOffset: the hint is tried first, then the nearest numbers', async (t) => {
  const frame = cobsDecode(stdout('x', 1000).subarray(0, -1))!;
  t.equal(sequenceOffset(frame, 990, 16), 10);
  t.equal(sequenceOffset(frame, 1010, 16, 5), -10, 'a wrong hint costs one more CRC');
  t.equal(sequenceOffset(frame, 990, 9), 0, 'beyond the span');
  t.equal(sequenceOffset(frame, 3, 16), 0);
});

t.test('FrameReader: an oversize frame is dropped without the buffer growing, then the next frame is read', async (t) => {
  const reader = new FrameReader(HANDSHAKE_MAX_BODY);
  const got = collect(reader);
  const buffer = () => (reader as unknown as { buffer: Buffer }).buffer;
  const fixed = buffer();
  t.equal(fixed.length, cobsMaxEncodedLength(HANDSHAKE_MAX_BODY + CRC_BYTES), 'one frame of buffer');

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
    reader.feed(encodeFrame(nonZero(1024), null));
    t.equal(got.frames.length, 1, 'a 1024-byte body without 0x00 (worst-case COBS) is accepted at limit 1024');
    reader.feed(encodeFrame(nonZero(1025), null));
    t.same(got.invalid, ['oversize'], 'a 1025-byte body without 0x00 is refused');
    reader.feed(encodeFrame(Buffer.alloc(2000, 0), null));
    t.same(got.invalid, ['oversize', 'oversize'], 'a 2000-byte body of zeros is refused');
    reader.feed(ping(1));
    t.equal(got.frames.length, 2, 'and the reader goes on');
  }
  {
    const reader = new FrameReader(1024);
    const got = collect(reader);
    reader.setMaxBody(64 * 1024);
    reader.feed(encodeFrame(nonZero(60_000), null));
    t.equal(got.frames.length, 1, 'setMaxBody raises the limit (after the handshake)');
    reader.setMaxBody(64);
    reader.feed(encodeFrame(nonZero(65), null));
    t.same(got.invalid, ['oversize'], 'and lowers it');
  }
  {
    // A body a few bytes over the limit but full of 0x00 encodes to no more than the
    // buffer holds: the decoded size must be checked as well as the encoded one.
    const reader = new FrameReader(1024);
    const got = collect(reader);
    const body = Buffer.alloc(1028, 0);
    body[0] = 0x0f;
    const frame = encodeFrame(body, null);
    t.ok(frame.length - 1 <= cobsMaxEncodedLength(1024 + CRC_BYTES), 'its encoding fits the buffer');
    reader.feed(frame);
    t.equal(got.frames.length, 0, 'a 1028-byte body of 0x00 is refused at limit 1024');
    t.same(got.invalid, ['oversize']);
    const exact = Buffer.alloc(1024, 0);
    exact[0] = 0x0f;
    reader.feed(encodeFrame(exact, null));
    t.equal(got.frames.length, 1, 'a 1024-byte one is accepted');
  }
});

t.test('isSequencedBody: the first body byte classifies the frame', async (t) => {
  for (let type = 1; type <= 23; type++) {
    const body = Buffer.from([type < 24 ? type : 0]);
    t.equal(isSequencedBody(body), type >= 10, `type ${type}`);
  }
  t.ok(isSequencedBody(Buffer.from([0x20])), 'output head (negative integer)');
  t.notOk(isSequencedBody(Buffer.from([0x00])), 'type 0 would be a link frame');
});
