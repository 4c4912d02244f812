/**
 * firmware-notes/vectors.json: every vector re-derived with the real encoder
 * and compared byte for byte, then every frame decoded back — once with the
 * wire code and once with the independent, naive CRC and COBS below (what a
 * firmware engineer would write from PROTOCOL.md).
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHmac } from 'node:crypto';
import { inflateRawSync } from 'node:zlib';
import {
  type Vector,
  type VectorFile,
  VECTORS_PATH,
  buildVectors,
  messageFromJson,
  messageToJson,
  renderVectors,
} from '../firmware-notes/make-vectors';
import { MAX_DEPTH } from '../wire/cbor';
import { Decompressor } from '../wire/compression';
import { ErrorCodes } from '../wire/errors';
import { FrameReader, HANDSHAKE_MAX_BODY, checkFrame, encodeFrame } from '../wire/framing';
import { Capability, PROTOCOL_VERSION } from '../wire/handshake';
import { MsgType, decodeChallengeParams, decodeMessage, encodeMessage } from '../wire/messages';
import { naiveCobsDecode, naiveCrc32c } from './helpers/naive-wire';

const file = JSON.parse(readFileSync(VECTORS_PATH, 'utf8')) as VectorFile;

function seqBytes(seq: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(seq));
  return b;
}

t.test('vectors.json is exactly what make-vectors.ts generates', async (t) => {
  t.equal(readFileSync(VECTORS_PATH, 'utf8'), renderVectors(), 'the file is up to date (regenerate with make-vectors.ts)');
  const built = buildVectors();
  t.equal(built.vectors.length, file.vectors.length);
  for (const [i, v] of built.vectors.entries()) {
    t.equal(v.hex, file.vectors[i].hex, `${v.name}: same bytes`);
  }
});

t.test('the required vectors are present', async (t) => {
  const names = new Set(file.vectors.map((v) => v.name));
  for (const name of [
    'stdout-10-bytes', 'stderr-stream-3', 'hello', 'challenge', 'proof', 'welcome', 'ack', 'nak', 'ping', 'pong',
    'error', 'start-shell', 'update-rc', 'complete-ok', 'complete-failed', 'interrupt', 'data', 'eof-times', 'credit',
    'log', 'header', 'print', 'shutdown', 'reject-stream', 'stdin', 'stdin-end', 'data-with-zeros', 'body-300-bytes',
    'deflate-first', 'deflate-with-history',
  ]) {
    t.ok(names.has(name), name);
  }
  const types = new Set(file.vectors.map((v) => v.message.type));
  for (const type of ['HELLO', 'CHALLENGE', 'PROOF', 'WELCOME', 'ACK', 'NAK', 'PING', 'PONG', 'ERROR', 'INFO', 'START', 'UPDATE',
    'COMPLETE', 'INTERRUPT', 'DATA', 'EOF', 'CREDIT', 'LOG', 'HEADER', 'PRINT', 'SHUTDOWN', 'REJECT', 'STDIN', 'FRAGMENT', 'OUTPUT']) {
    t.ok(types.has(type), `a vector of ${type}`);
  }
});

for (const v of file.vectors) {
  t.test(`vector ${v.name}`, async (t) => {
    const wire = Buffer.from(v.hex, 'hex');
    const body = Buffer.from(v.body, 'hex');
    t.equal(wire.length, v.wireBytes, 'wireBytes');

    // Re-encoded from its JSON description, byte for byte.
    const message = messageFromJson(v.message);
    const plainHex = v.deflate ? v.deflate.plainBody : v.body;
    t.equal(encodeMessage(message).toString('hex'), plainHex, 'the JSON message encodes to the (plain) body');
    t.equal(encodeFrame(body, v.seq).toString('hex'), v.hex, 'the body frames to the wire bytes');

    // Decoded back with the wire code.
    const reader = new FrameReader(1024);
    const frames: Buffer[] = [];
    reader.on('frame', (f: Buffer) => frames.push(f));
    reader.feed(wire);
    t.equal(frames.length, 1, 'one frame');
    const check = checkFrame(frames[0], v.seq ?? 0);
    t.ok(check.ok, 'its CRC checks at its sequence number');
    if (!check.ok) return;
    t.equal(check.sequenced, v.seq !== null, v.seq === null ? 'a link frame' : 'a sequenced frame');
    t.equal(check.body.toString('hex'), v.body, 'the body');
    let plain = check.body;
    if (v.deflate) {
      const history = Buffer.from(v.deflate.history, 'hex');
      const inflater = new Decompressor(65536);
      if (history.length) inflater.unpack(history);
      plain = inflater.unpack(check.body);
      t.equal(plain.toString('hex'), v.deflate.plainBody, 'inflates (reference) to the plain body');
      const naive = inflateRawSync(check.body.subarray(1), history.length ? { dictionary: history } : {});
      t.equal(naive.toString('hex'), v.deflate.plainBody, 'inflates (plain zlib, history as dictionary) to the plain body');
      t.equal(check.body[0], 0xff, 'marked 0xff');
    }
    const decoded = decodeMessage(plain);
    t.same(messageToJson(decoded), v.message, 'decodes to the described fields');
    if (v.seq !== null) {
      t.notOk(checkFrame(frames[0], v.seq + 1).ok, 'fails at the next sequence number');
      if (v.seq > 0) t.notOk(checkFrame(frames[0], v.seq - 1).ok, 'fails at the previous sequence number');
    }

    // Decoded back independently: delimiter, naive COBS, naive CRC over seq || body.
    t.equal(wire[wire.length - 1], 0, 'ends with the delimiter');
    t.equal(wire.subarray(0, -1).indexOf(0), -1, 'no other 0x00');
    const raw = naiveCobsDecode(wire.subarray(0, -1));
    t.equal(raw.subarray(0, -4).toString('hex'), v.body, 'naive COBS gives body || CRC');
    const crcInput = v.seq === null ? body : Buffer.concat([seqBytes(v.seq), body]);
    t.equal(raw.readUInt32LE(raw.length - 4), naiveCrc32c(crcInput), 'naive CRC-32C over [seq LE64 ||] body, little-endian');
    t.equal(v.crc, '0x' + naiveCrc32c(crcInput).toString(16).padStart(8, '0'), 'crc field');
    t.equal(body[0] < 0x0a, v.seq === null, 'first body byte < 0x0a exactly for link frames');
  });
}

function vec(name: string): Vector {
  return file.vectors.find((v) => v.name === name)!;
}

t.test('a 10-byte stdout chunk costs 8 bytes of overhead: 18 on the wire', async (t) => {
  const v = vec('stdout-10-bytes');
  t.equal(v.seq, 0);
  t.equal(Buffer.from(v.body, 'hex').length, 12, 'body: 1 head + 1 length + 10 data');
  t.equal(v.wireBytes, 18, '18 bytes on the wire');
  t.equal(file.wireCost.stdout10Bytes, 18);
  t.equal(v.hex.slice(2, 4), '20', 'output head of stream 0 stdout is 0x20 (-1)');
  t.equal(vec('stderr-stream-3').body.slice(0, 2), '27', 'stream 3 stderr: head -8 = 0x27');
});

t.test('the 300-byte body crosses a COBS block boundary', async (t) => {
  const v = vec('body-300-bytes');
  t.equal(v.body.length / 2, 300);
  t.equal(v.wireBytes, 307, '304 bytes + 2 code bytes + delimiter');
  t.equal(v.hex.slice(0, 2), 'ff', 'first block: code 0xff, 254 bytes');
  t.equal(v.hex.slice(255 * 2, 256 * 2), '33', 'second block: code 0x33, 50 bytes');
});

t.test('the zero-filled body is COBS-stuffed', async (t) => {
  const v = vec('data-with-zeros');
  t.ok(Buffer.from(v.body, 'hex').includes(0), 'the body has 0x00 bytes');
  t.equal(Buffer.from(v.hex, 'hex').subarray(0, -1).indexOf(0), -1, 'the frame has none but the delimiter');
});

t.test('the handshake vectors are reproducible from the documented inputs', async (t) => {
  const h = file.handshake as Record<string, string>;
  const hmac = (input: string) => createHmac('sha256', Buffer.from(h.secretBytes, 'hex')).update(Buffer.from(input, 'hex')).digest('hex');
  t.equal(Buffer.from(h.secretBytes, 'hex').toString(), 'sesame');
  t.equal(h.masterInput, Buffer.from('tether/1 master\0').toString('hex') + h.helloBody + h.challengeParams);
  t.equal(h.agentInput, Buffer.from('tether/1 agent\0').toString('hex') + h.helloBody + h.challengeParams);
  t.equal(hmac(h.masterInput), h.masterProof, 'master proof = HMAC-SHA256(secret, masterInput)');
  t.equal(hmac(h.agentInput), h.agentProof, 'agent proof = HMAC-SHA256(secret, agentInput)');
  t.equal(vec('hello').body, h.helloBody, 'HELLO body, type byte included');
  const challenge = decodeMessage(Buffer.from(vec('challenge').body, 'hex'));
  if (challenge.type !== 2) throw new Error('not a challenge');
  t.equal(challenge.paramsBytes.toString('hex'), h.challengeParams);
  t.equal(challenge.proof.toString('hex'), h.masterProof);
  t.same(decodeChallengeParams(challenge.paramsBytes), challenge.params);
  t.equal(challenge.params.nonce.toString('hex'), h.masterNonce);
  t.equal((vec('proof').message.proof as { hex: string }).hex, h.agentProof);
  const cost = file.wireCost as Record<string, number>;
  t.equal(cost.handshakeTotal, ['hello', 'challenge', 'proof', 'welcome'].reduce((n, name) => n + vec(name).wireBytes, 0));
  t.comment(`handshake on the wire: ${JSON.stringify(cost)}`);
});

t.test('PROTOCOL.md agrees with the code and the vectors', async (t) => {
  const dir = join(__dirname, '..', 'firmware-notes');
  const doc = readFileSync(join(dir, 'PROTOCOL.md'), 'utf8');
  const cddl = readFileSync(join(dir, 'tether.cddl'), 'utf8');
  t.ok(doc.includes(cddl.trimEnd()), 'tether.cddl is inlined verbatim');
  const cost = file.wireCost as Record<string, number>;
  t.ok(doc.includes(`**${cost.stdout10Bytes}** (8 of overhead)`), `the 10-byte chunk: ${cost.stdout10Bytes} bytes`);
  t.ok(
    doc.includes(`HELLO ${cost.hello} + CHALLENGE ${cost.challenge} + PROOF ${cost.proof} + WELCOME ${cost.welcome} | **${cost.handshakeTotal}**`),
    `the handshake: ${cost.handshakeTotal} bytes`,
  );
  for (const [name, code] of Object.entries(ErrorCodes)) {
    t.ok(doc.includes(`| ${code} | ${name} |`), `error table: ${code} ${name}`);
    t.match(cddl, new RegExp(`\\b${name}: ${code}\\b`), `CDDL error-code: ${name}`);
  }
  for (const [name, type] of Object.entries(MsgType)) {
    t.ok(doc.includes(`| ${type} | ${name} |`), `message table: ${type} ${name}`);
    t.match(cddl, new RegExp(`= \\[type: ${type}\\b`), `CDDL rule for ${name}`);
  }
  t.ok(doc.includes('0xE3069283'), 'the CRC-32C check value');
  t.ok(doc.includes(`${HANDSHAKE_MAX_BODY} bytes`), 'the pre-handshake limit');
  t.equal(MAX_DEPTH, 16);
  t.equal(PROTOCOL_VERSION, 1);
  t.same(Capability, { DEFLATE: 1, RESUME: 2 });
});
