/**
 * The message codec: a round trip of every message type, and the decoder's
 * hardening against hostile bodies (tags, indefinite lengths, declared
 * lengths beyond the frame, deep nesting, unknown types).
 */
import t, { type Test } from 'tap';
import { decodeItem, decodeSequence, encodeSequence, MAX_DEPTH } from '../wire/cbor';
import { payloadLimit } from '../wire/credit';
import { TetherError } from '../wire/errors';
import {
  type Message,
  MsgType,
  type OutgoingMessage,
  decodeChallengeParams,
  decodeMessage,
  encodeChallengeParams,
  encodeMessage,
  encodeOutput,
} from '../wire/messages';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const nonce = Buffer.alloc(32, 0x5a);
const mac = Buffer.alloc(32, 0xc3);
const session = Buffer.alloc(16, 0x16);

/** Runs fn and returns the TetherError it throws (fails the test if it throws anything else or nothing). */
function refusal(t: Test, fn: () => unknown, what: string): TetherError | null {
  try {
    fn();
  } catch (error) {
    t.ok(error instanceof TetherError, `${what}: throws a TetherError`);
    return error instanceof TetherError ? error : null;
  }
  t.fail(`${what}: was accepted`);
  return null;
}

function refusedAs(t: Test, body: Buffer, code: 'BAD_MESSAGE' | 'UNKNOWN_MESSAGE', what: string, pattern?: RegExp): void {
  const error = refusal(t, () => decodeMessage(body), what);
  if (!error) return;
  t.equal(error.code, code, `${what}: ${code}`);
  if (pattern) t.match(error.message, pattern, `${what}: why`);
}

/** The message without the fields only decoding fills in. */
function strip(m: Message): unknown {
  const copy: Record<string, unknown> = { ...m };
  delete copy.raw;
  return copy;
}

t.test('round trip of every message type', async (t) => {
  const helloParams = { versionMin: 1, versionMax: 1, name: 'board-01', nonce, caps: 3, maxFrame: 65536 };
  const challengeParams = { version: 1, nonce, caps: 1, maxFrame: 4096, keepalive: 10, window: 262144 };
  const paramsBytes = encodeChallengeParams(challengeParams);
  const messages: OutgoingMessage[] = [
    { type: MsgType.HELLO, params: helloParams },
    { type: MsgType.HELLO, params: { ...helloParams, name: 'ünïcode-wörker', resume: { session, nextSeq: 12345 } } },
    { type: MsgType.CHALLENGE, paramsBytes, proof: mac },
    { type: MsgType.PROOF, proof: mac },
    { type: MsgType.WELCOME, session, resumed: false, nextSeq: 0 },
    { type: MsgType.WELCOME, session, resumed: true, nextSeq: 4294967295 },
    { type: MsgType.ACK, nextSeq: 0 },
    { type: MsgType.ACK, nextSeq: 65536 },
    { type: MsgType.NAK, nextSeq: 23 },
    { type: MsgType.ACK, nextSeq: 7, received: Buffer.from([0x06]) },
    { type: MsgType.NAK, nextSeq: 7, received: Buffer.from([0xff, 0x01]) },
    { type: MsgType.PING, token: 0 },
    { type: MsgType.PONG, token: 65535 },
    { type: MsgType.ERROR, code: 7, message: 'no' },
    { type: MsgType.INFO, info: { os: 'linux', numcpus: 4, environ: { PATH: '/bin' }, commands: ['shell'] } },
    { type: MsgType.START, stream: 0, command: 'shell', args: { command: ['make', '-j4'], env: null, timeout: 1200, usePTY: false } },
    { type: MsgType.START, stream: 70000, command: 'download_file', args: { path: 'x', maxsize: null, blocksize: 16384, mode: 0o644 } },
    { type: MsgType.UPDATE, stream: 1, key: 'rc', value: -11 },
    { type: MsgType.UPDATE, stream: 1, key: 'elapsed', value: 0.1 },
    { type: MsgType.UPDATE, stream: 1, key: 'stat', value: [16877, 1, 2, 3, 0, 0, 4096, 1.5, 2.5, 3.5] },
    { type: MsgType.UPDATE, stream: 1, key: 'files', value: ['a', 'b'] },
    { type: MsgType.UPDATE, stream: 1, key: 'x', value: null },
    { type: MsgType.UPDATE, stream: 1, key: 'x', value: Buffer.from([0, 1, 2]) },
    { type: MsgType.COMPLETE, stream: 2, failure: null },
    { type: MsgType.COMPLETE, stream: 2, failure: { code: 17, message: 'boom' } },
    { type: MsgType.INTERRUPT, stream: 3, why: 'timeout' },
    { type: MsgType.DATA, stream: 4, data: Buffer.alloc(0) },
    { type: MsgType.DATA, stream: 4, data: Buffer.alloc(5000, 0) },
    { type: MsgType.EOF, stream: 4, times: null },
    { type: MsgType.EOF, stream: 4, times: { atime: 1, mtime: 1700000000.5 } },
    { type: MsgType.CREDIT, stream: 5, bytes: 1 << 20 },
    { type: MsgType.LOG, stream: 6, name: 'test.log', data: Buffer.from('ok\n') },
    { type: MsgType.HEADER, stream: 7, text: 'make\n' },
    { type: MsgType.PRINT, text: 'hi' },
    { type: MsgType.SHUTDOWN },
    { type: MsgType.REJECT, stream: null, code: 5, message: 'unknown message type 99' },
    { type: MsgType.REJECT, stream: 8, code: 13, message: 'no such command' },
    { type: MsgType.STDIN, stream: 9, data: Buffer.from('y\n') },
    { type: MsgType.STDIN, stream: 9, data: null },
    { type: 'output', stream: 0, channel: 0, data: Buffer.from('out') },
    { type: 'output', stream: 0, channel: 1, data: Buffer.from('err') },
    { type: 'output', stream: 11, channel: 1, data: Buffer.alloc(0) },
    { type: 'output', stream: 12, channel: 0, data: Buffer.from('two-byte head') },
    { type: 'output', stream: 40000, channel: 1, data: Buffer.from('three-byte head') },
    { type: MsgType.FRAGMENT, more: true, data: Buffer.from([0x14, 0x61]) },
  ];
  const seen = new Set<unknown>();
  for (const m of messages) {
    const body = encodeMessage(m);
    const back = decodeMessage(body);
    seen.add(back.type);
    const expected: Record<string, unknown> = { ...m };
    if (m.type === MsgType.CHALLENGE) expected.params = challengeParams;
    t.same(strip(back), expected, `${String(m.type)} ${body.length} bytes`);
    if (back.type === MsgType.HELLO) t.same(back.raw, body, 'HELLO keeps its body bytes for the proofs');
    t.equal(body[0] >= 0x0a, m.type === 'output' || m.type >= 10, 'classified by its first byte');
  }
  t.equal(seen.size, 25, 'all 24 types and output');
  t.same(decodeChallengeParams(paramsBytes), challengeParams, 'challenge parameters');
});

t.test('output: the head and the length head', async (t) => {
  t.equal(encodeOutput(0, 0, Buffer.from('0123456789')).toString('hex'), '204a30313233343536373839', 'stream 0 stdout');
  t.equal(encodeOutput(3, 1, Buffer.from('x'))[0], 0x27, 'stream 3 stderr: -8');
  t.equal(encodeOutput(11, 1, Buffer.from('x'))[0], 0x37, 'stream 11 stderr: -24, the last one-byte head');
  t.same([...encodeOutput(12, 0, Buffer.alloc(0)).subarray(0, 2)], [0x38, 0x18], 'stream 12 stdout: -25');
  for (const n of [0, 23, 24, 255, 256, 65535, 65536, 100_000]) {
    const data = Buffer.alloc(n, 0x61);
    const body = encodeOutput(5, 0, data);
    const generic = encodeSequence([-11, data]);
    t.same(body, generic, `${n} bytes: the hand-written encoding is the preferred CBOR`);
    const m = decodeMessage(body);
    t.ok(m.type === 'output' && m.data.length === n && m.stream === 5 && m.channel === 0, `${n} bytes decode`);
  }
});

t.test('handshake maps: keys are read as integers or as their text form', async (t) => {
  const asIntegers = hex(`01 a6 01 01 02 01 03 61 61 04 58 20 ${'11'.repeat(32)} 05 00 06 19 0400`);
  const m = decodeMessage(asIntegers);
  t.match(m, { type: MsgType.HELLO, params: { versionMin: 1, versionMax: 1, name: 'a', caps: 0, maxFrame: 1024 } }, 'integer keys');
  const body = encodeMessage({ type: MsgType.HELLO, params: { versionMin: 1, versionMax: 1, name: 'a', nonce, caps: 0, maxFrame: 1024 } });
  t.equal(body.subarray(0, 5).toString('hex'), '01a6010102', 'the reference sends small integer keys: {1: 1, 2: ...');
  const params = encodeChallengeParams({ version: 1, nonce, caps: 0, maxFrame: 1024, keepalive: 10, window: 65536 });
  t.equal(params.subarray(0, 3).toString('hex'), 'a60101', 'CHALLENGE parameters too');
  t.equal(params.indexOf(Buffer.from([0x0a, 0x1a, 0x00, 0x01, 0x00, 0x00])), params.length - 6, 'key 10 is 0x0a');
  const asText = hex(`01 a6 61 31 01 61 32 01 61 33 61 61 61 34 58 20 ${'11'.repeat(32)} 61 35 00 61 36 19 0400`);
  t.match(decodeMessage(asText), { type: MsgType.HELLO, params: { versionMin: 1, name: 'a', maxFrame: 1024 } }, 'text keys "1".."6" are read too');
  const noCaps = hex(`01 a5 01 01 02 01 03 61 61 04 58 20 ${'11'.repeat(32)} 06 19 0400`);
  t.match(decodeMessage(noCaps), { params: { caps: 0 } }, 'caps may be absent (0)');
  refusedAs(t, hex(`01 a5 01 01 02 01 03 61 61 04 58 1f ${'11'.repeat(31)} 06 19 0400`), 'BAD_MESSAGE', 'a 31-byte nonce', /nonce must be 32 bytes/);
  refusedAs(t, hex('01 a0'), 'BAD_MESSAGE', 'HELLO without parameters', /version min/);
});

t.test('decoder hardening: bignum tags 2 and 3 are refused before any work', async (t) => {
  const mb = 1 << 20;
  for (const tag of [0xc2, 0xc3]) {
    const body = Buffer.concat([hex('0c 00 61 78'), Buffer.from([tag, 0x5a, 0x00, 0x10, 0x00, 0x00]), Buffer.alloc(mb, 0xff)]);
    refusedAs(t, body, 'BAD_MESSAGE', `tag ${tag - 0xc0} around a 1 MB byte string`, /tags are not used/);
    refusedAs(t, Buffer.concat([hex('0c 00 61 78'), Buffer.from([tag, 0x41, 0x01])]), 'BAD_MESSAGE', `small tag ${tag - 0xc0}`, /tags/);
  }
  refusedAs(t, hex('0c 00 61 78 c1 1a 00000000'), 'BAD_MESSAGE', 'tag 1 (date)', /tags/);
  refusedAs(t, hex('0c 00 61 78 d9 0103 a0'), 'BAD_MESSAGE', 'tag 259 (map)', /tags/);
  refusedAs(t, hex('0c 00 61 78 d8 1e 82 01 02'), 'BAD_MESSAGE', 'tag 30 (rational)', /tags/);
  refusedAs(t, hex('0c 00 61 78 81 81 c2 41 01'), 'BAD_MESSAGE', 'a tag nested in arrays', /tags/);
});

t.test('decoder hardening: indefinite lengths are refused', async (t) => {
  for (const [head, what] of [['5f 41 01 ff', 'byte string'], ['7f 61 61 ff', 'text string'], ['9f 01 ff', 'array'], ['bf 01 01 ff', 'map']] as const) {
    refusedAs(t, hex(`0c 00 61 78 ${head}`), 'BAD_MESSAGE', `indefinite-length ${what}`, /indefinite length/);
  }
  refusedAs(t, hex('0c 00 61 78 ff'), 'BAD_MESSAGE', 'a lone break byte');
});

t.test('decoder hardening: declared lengths longer than the frame are refused before allocation', async (t) => {
  const cases: Array<[string, string]> = [
    ['5b 0000010000000000', 'a 2^40-byte byte string'],
    ['7a ffffffff', 'a 4 GiB text string'],
    ['5a 00100000 00', 'a 1 MiB byte string with one byte present'],
    ['9b 0000000100000000', 'a 2^32-element array'],
    ['9a 7fffffff', 'a 2^31-element array'],
    ['bb 0000000100000000', 'a 2^32-pair map'],
    ['b9 ffff 01', 'a 65535-pair map'],
    ['98 20 01', 'a 32-element array with one element'],
  ];
  const before = process.memoryUsage().arrayBuffers;
  for (const [item, what] of cases) {
    refusedAs(t, hex(`0c 00 61 78 ${item}`), 'BAD_MESSAGE', what, /longer than the frame|truncated/);
  }
  t.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024, 'nothing the size of a declared length was allocated');
  refusedAs(t, hex('0c 00 61 78 1a 0000'), 'BAD_MESSAGE', 'a truncated integer', /truncated/);
  refusedAs(t, hex('0c 00 61 78 fb 0000'), 'BAD_MESSAGE', 'a truncated float', /truncated/);
  refusedAs(t, hex('0c 00 61 78 1c'), 'BAD_MESSAGE', 'reserved additional information 28', /reserved/);
});

t.test('decoder hardening: nesting depth', async (t) => {
  t.equal(MAX_DEPTH, 16);
  const nested = (arrays: number, inner: string) => hex('81'.repeat(arrays) + inner);
  t.same(decodeItem(nested(16, '01')), JSON.parse('['.repeat(16) + '1' + ']'.repeat(16)), 'an item inside 16 arrays');
  refusal(t, () => decodeItem(nested(17, '01')), 'an item inside 17 arrays');
  t.doesNotThrow(() => decodeItem(nested(16, '80')), '17 nested arrays, the innermost empty (nothing at depth 17)');
  t.match(refusal(t, () => decodeItem(nested(17, '80')), '18 nested arrays'), { code: 'BAD_MESSAGE', message: /nested too deeply/ });
  refusal(t, () => decodeItem(hex('a1 61 61'.repeat(17) + '01')), 'an item inside 17 maps');
  t.doesNotThrow(() => decodeItem(hex('a1 61 61'.repeat(16) + '01')), 'an item inside 16 maps');
  refusedAs(t, Buffer.concat([hex('0c 00 61 78'), nested(10_000, '01')]), 'BAD_MESSAGE', '10 000 nested arrays', /nested too deeply/);
});

t.test('decoder hardening: simple values', async (t) => {
  for (const [item, value] of [['f4', false], ['f5', true], ['f6', null], ['f7', undefined], ['f9 3e00', 1.5], ['fa 3fc00000', 1.5], ['fb 3ff8000000000000', 1.5]] as const) {
    t.match(decodeMessage(hex(`0c 00 61 78 ${item}`)), { type: MsgType.UPDATE, value }, `${item} accepted`);
  }
  for (const item of ['e0', 'f0', 'f3', 'f8 20', 'f8 ff', 'fc', 'fe', 'ff']) {
    refusedAs(t, hex(`0c 00 61 78 ${item}`), 'BAD_MESSAGE', `${item} refused`);
  }
});

t.test('unknown message types: UNKNOWN_MESSAGE, not a crash', async (t) => {
  for (const [body, what] of [['00', 'type 0'], ['18 19', 'type 25'], ['18 2a 01 02', 'type 42 with fields'], ['19 03e8', 'type 1000']] as const) {
    refusedAs(t, hex(body), 'UNKNOWN_MESSAGE', what, /unknown message type/);
  }
});

t.test('malformed messages: BAD_MESSAGE', async (t) => {
  const cases: Array<[string, string, RegExp?]> = [
    ['', 'an empty body (a frame cannot have one: it is too short for its CRC)'],
    ['61 61', 'a text type', /message type must be an integer/],
    ['f6', 'a null type'],
    ['05', 'ACK without its field', /needs 1 fields, has 0/],
    ['05 61 61', 'ACK of text', /unsigned integer/],
    ['05 20', 'ACK of -1', /unsigned integer/],
    ['05 fb 3ff8000000000000', 'ACK of 1.5', /unsigned integer/],
    ['0b 00 65 7368656c6c', 'START without arguments', /needs 3 fields/],
    ['0b 00 65 7368656c6c 80', 'START with an array of arguments', /arguments must be a map/],
    ['0b 20 65 7368656c6c a0', 'START on stream -1', /stream must be an unsigned integer/],
    ['0d 00 81 01', 'COMPLETE with a one-element failure', /two-element array/],
    ['0d 00 82 61 61 61 61', 'COMPLETE with a text failure code', /failure code/],
    ['10 00 82 61 61 01', 'EOF with text times', /file times must be numbers/],
    ['20', 'output without data', /output data/],
    ['20 61 61', 'output of text', /output data must be a byte string/],
    ['04 50 ' + '00'.repeat(16) + ' f4', 'WELCOME without next sequence number'],
    ['04 4f ' + '00'.repeat(15) + ' f4 00', 'WELCOME with a 15-byte session id', /session id must be 16 bytes/],
    ['02 41 1a 58 20' + '00'.repeat(32), 'CHALLENGE whose parameters are not CBOR', /truncated/],
    ['02 41 a0 58 20' + '00'.repeat(32), 'CHALLENGE whose parameters are an empty map', /challenge version/],
    ['02 43 a0 a0 a0 58 20' + '00'.repeat(32), 'CHALLENGE whose parameters are three items', /one map/],
    ['03 58 1f' + '00'.repeat(31), 'a 31-byte PROOF', /proof must be 32 bytes/],
    ['16 61 61 01 60', 'REJECT on stream "a"'],
    ['17 00 01', 'STDIN of an integer', /stdin data/],
    ['0c 00 61 78 62 c3', 'a text string cut in its middle', /truncated|longer/],
  ];
  for (const [body, what, why] of cases) refusedAs(t, hex(body), 'BAD_MESSAGE', what, why);
});

t.test('room to extend: fields after the defined ones are ignored', async (t) => {
  t.same(decodeMessage(hex('07 18 20 61 61 a0')), { type: MsgType.PING, token: 32 });
  t.same(decodeMessage(hex('05 18 20 41 06 a0')), { type: MsgType.ACK, nextSeq: 32, received: Buffer.from([6]) }, 'ACK: after its bitmap');
  t.same(decodeMessage(hex('15 01 02')), { type: MsgType.SHUTDOWN });
});

t.test('lenient decoding the spec does not promise (recorded so a change is noticed)', async (t) => {
  t.same(decodeMessage(hex('05 f9 4500')), { type: MsgType.ACK, nextSeq: 5 }, 'an integral float where an integer is expected');
  t.same(decodeMessage(hex('05 1a 00000005')), { type: MsgType.ACK, nextSeq: 5 }, 'a non-preferred 4-byte argument');
  t.same(decodeMessage(hex('05 1b 0000000000000005')), { type: MsgType.ACK, nextSeq: 5 }, 'an 8-byte argument decodes as a number');
  t.same(decodeMessage(hex('fb 4014000000000000 18 20')), { type: MsgType.ACK, nextSeq: 32 }, 'a message type written as a float');
  t.match(decodeMessage(hex('18 05 18 20')), { type: MsgType.ACK }, 'a link type in a non-preferred form (first byte 0x18: classified as sequenced)');
});

t.test('output heads beyond 32 bits', async (t) => {
  t.match(decodeMessage(hex('3a 80000000 41 aa')), { type: 'output', stream: 2 ** 30, channel: 0 }, 'head -1-2^31: stream 2^30, stdout');
  t.match(decodeMessage(hex('3a 7fffffff 41 aa')), { type: 'output', stream: 2 ** 30 - 1, channel: 1 }, 'head -2^31: stream 2^30-1, stderr');
  t.match(decodeMessage(hex('3a fffffffe 41 aa')), { type: 'output', stream: 2 ** 31 - 1, channel: 0 }, 'head -2^32+1: stream 2^31-1, stdout');
  t.match(decodeMessage(hex('3b 0000000100000001 41 aa')), { type: 'output', stream: 2 ** 31, channel: 1 }, 'an 8-byte head: -1-(2^32+1), stream 2^31, stderr');
});

t.test('encoder and profile: what the encoder can emit that the decoder refuses', async (t) => {
  const bigUpdate = encodeMessage({ type: MsgType.UPDATE, stream: 0, key: 'x', value: 2n ** 70n });
  t.equal(bigUpdate[4], 0xc2, 'a BigInt beyond 64 bits is encoded as a bignum tag…');
  refusedAs(t, bigUpdate, 'BAD_MESSAGE', '…which the peer refuses', /tags/);
  const dateUpdate = encodeMessage({ type: MsgType.UPDATE, stream: 0, key: 'x', value: new Date(0) });
  refusedAs(t, dateUpdate, 'BAD_MESSAGE', 'a Date is encoded with tag 1', /tags/);
  const mapUpdate = encodeMessage({ type: MsgType.UPDATE, stream: 0, key: 'x', value: new Map([[1, 2]]) });
  t.match(decodeMessage(mapUpdate), { type: MsgType.UPDATE, value: { 1: 2 } }, 'a JS Map is a plain CBOR map (no tag 259)');
  const ack = encodeMessage({ type: MsgType.ACK, nextSeq: 2 ** 32 });
  t.equal(ack[1], 0xfb, 'integers of 2^32 and more are sent as float64 (0xfb)');
  t.same(decodeMessage(ack), { type: MsgType.ACK, nextSeq: 2 ** 32 }, 'and read back as integers by the reference');
});

t.test('payloadLimit leaves room for every message head', async (t) => {
  const window = 262144;
  for (const maxBody of [64, 1024, 65536]) {
    const chunk = Buffer.alloc(payloadLimit(maxBody, window), 0x61);
    for (const m of [
      { type: 'output', stream: 100_000, channel: 1, data: chunk },
      { type: MsgType.DATA, stream: 100_000, data: chunk },
      { type: MsgType.STDIN, stream: 100_000, data: chunk },
    ] as OutgoingMessage[]) {
      t.ok(encodeMessage(m).length <= maxBody, `max frame ${maxBody}: ${String(m.type)} with a full chunk fits`);
    }
    // LOG also carries its name: agent/agent-command.ts asks for byteLength(name) + 9 more bytes.
    for (const name of ['log', 'junit-results.xml', 'x'.repeat(23), 'x'.repeat(300)]) {
      const limit = payloadLimit(maxBody, window, Buffer.byteLength(name) + 9);
      const body = encodeMessage({ type: MsgType.LOG, stream: 100_000, name, data: Buffer.alloc(limit, 0x61) });
      if (limit > 1) t.ok(body.length <= maxBody, `max frame ${maxBody}: LOG named ${name.length} bytes with a full chunk fits`);
      else t.equal(limit, 1, `max frame ${maxBody}: a ${name.length}-byte log name leaves no room; chunks of 1 byte`);
    }
  }
  t.equal(payloadLimit(65536, 4096), 4096, 'never above one window');
});

t.test('decodeSequence: a CBOR sequence is read item after item', async (t) => {
  t.same(decodeSequence(hex('01 02 03')), [1, 2, 3]);
  t.throws(() => decodeSequence(Buffer.alloc(0)), { code: 'BAD_MESSAGE' }, 'an empty sequence is refused (a frame body is never empty)');
  t.same(encodeSequence([1, 'a', Buffer.from([0])]), hex('01 61 61 41 00'));
});
