/**
 * firmware-notes/vectors.json: every vector re-derived with the real encoder
 * and compared byte for byte, then every frame decoded back — once with the
 * wire code and once with the independent, naive CRC and COBS below (what a
 * firmware engineer would write from PROTOCOL.md).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
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
import { Decompressor, inflatedLimit } from '../wire/compression';
import { ErrorCodes } from '../wire/errors';
import { FrameAuth, deriveKeys } from '../wire/frame-auth';
import { FrameReader, HANDSHAKE_MAX_BODY, authenticatedParts, encodeAuthenticatedFrame, encodeHandshakeFrame, handshakeBody } from '../wire/framing';
import {
  Capability,
  MAX_KEEPALIVE_SECONDS,
  MAX_WINDOW,
  MIN_KEEPALIVE_SECONDS,
  MIN_MAX_FRAME,
  MIN_WINDOW,
  PROTOCOL_VERSION,
} from '../wire/handshake';
import { MsgType, decodeChallengeParams, decodeMessage, encodeMessage } from '../wire/messages';
import { naiveCobsDecode, naiveCrc32c } from './helpers/naive-wire';

const file = JSON.parse(readFileSync(VECTORS_PATH, 'utf8')) as VectorFile;

function numberBytes(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

const h = file.handshake as Record<string, string> & { keys: Record<string, string> };
const keys = { agentToMaster: Buffer.from(h.keys.agentToMaster, 'hex'), masterToAgent: Buffer.from(h.keys.masterToAgent, 'hex') };
/** The receiving side of a vector: it checks tags made with the key of the vector's sender. */
const receiverOf = (v: Vector) => new FrameAuth(keys, v.from === 'agent' ? 'master' : 'agent');

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
    'stdout-10-bytes', 'stderr-stream-3', 'hello', 'challenge', 'proof', 'welcome', 'ack', 'nak', 'ack-selective', 'nak-selective', 'ping', 'pong',
    'error', 'start-shell', 'update-rc', 'complete-ok', 'complete-failed', 'interrupt', 'data', 'eof-times', 'credit',
    'log', 'header', 'print', 'shutdown', 'reject-stream', 'stdin', 'stdin-end', 'data-with-zeros', 'body-300-bytes',
    'deflate-first', 'deflate-with-history', 'deflate-beyond-frame',
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
    const tag = v.tag === null ? null : Buffer.from(v.tag, 'hex');
    const framed = tag === null || v.number === null ? encodeHandshakeFrame(body) : encodeAuthenticatedFrame(body, v.number % 0x10000, tag);
    t.equal(framed.toString('hex'), v.hex, 'the body frames to the wire bytes');

    // Decoded back with the wire code.
    const reader = new FrameReader(1024);
    const frames: Buffer[] = [];
    reader.on('frame', (f: Buffer) => frames.push(f));
    reader.feed(wire);
    t.equal(frames.length, 1, 'one frame');
    const check = v.number === null ? { body: handshakeBody(frames[0]) } : authenticatedParts(frames[0]);
    t.ok(check && check.body, 'its CRC checks');
    if (!check || !check.body) return;
    t.equal(check.body.toString('hex'), v.body, 'the body');
    if (v.number !== null && tag !== null && 'tag' in check) {
      t.equal(check.low, v.number % 0x10000, 'the frame carries the low 16 bits of its number');
      t.ok(receiverOf(v).verify(v.number, check.body, check.tag), 'its tag checks at its number, with its direction\'s key');
      t.notOk(receiverOf(v).verify(v.number + 1, check.body, check.tag), 'not at the next number');
      t.notOk(receiverOf(v).verify(v.number + 0x10000, check.body, check.tag), 'nor 2^16 later (same bits on the wire)');
      t.notOk(new FrameAuth(keys, v.from).verify(v.number, check.body, check.tag), 'nor with the other direction\'s key (reflected)');
      t.notOk(handshakeBody(frames[0]), 'read as a handshake frame, it fails its CRC (the implicit 0x02)');
    }
    t.equal(check.body[0] < 0x0a, v.number === null || v.message.type === 'WELCOME' || ['ACK', 'NAK', 'PING', 'PONG', 'ERROR'].includes(String(v.message.type)), 'first body byte < 0x0a exactly for link and handshake frames');
    let plain: Buffer = check.body;
    if (v.deflate) {
      const history = Buffer.from(v.deflate.history, 'hex');
      // A receiver of 512-byte frames, the smallest any vector needs, reads every deflate vector.
      const inflater = new Decompressor(inflatedLimit(512));
      if (history.length) inflater.unpack(history);
      plain = inflater.unpack(check.body);
      t.equal(plain.toString('hex'), v.deflate.plainBody, 'inflates (reference) to the plain body');
      const naive = inflateRawSync(check.body.subarray(1), history.length ? { dictionary: history } : {});
      t.equal(naive.toString('hex'), v.deflate.plainBody, 'inflates (plain zlib, history as dictionary) to the plain body');
      t.equal(check.body[0], 0xff, 'marked 0xff');
      if (v.name === 'deflate-beyond-frame') t.ok(check.body.length <= 512 && plain.length > 512, `a ${check.body.length}-byte body inflates to ${plain.length} bytes`);
    }
    const decoded = decodeMessage(plain);
    t.same(messageToJson(decoded), v.message, 'decodes to the described fields');

    // Decoded back independently: delimiter, naive COBS, naive CRC, HMAC from node:crypto.
    t.equal(wire[wire.length - 1], 0, 'ends with the delimiter');
    t.equal(wire.subarray(0, -1).indexOf(0), -1, 'no other 0x00');
    const raw = naiveCobsDecode(wire.subarray(0, -1));
    const trailer = v.number === null ? 4 : 14;
    t.equal(raw.subarray(0, -trailer).toString('hex'), v.body, 'naive COBS gives body || trailer');
    const crcInput = v.number === null ? raw.subarray(0, -4) : Buffer.concat([Buffer.from([0x02]), raw.subarray(0, -4)]);
    t.equal(raw.readUInt32LE(raw.length - 4), naiveCrc32c(crcInput), 'naive CRC-32C over [0x02 ||] everything before it, little-endian');
    t.equal(v.crc, '0x' + naiveCrc32c(crcInput).toString(16).padStart(8, '0'), 'crc field');
    if (v.number !== null) {
      t.equal(raw.readUInt16LE(raw.length - 14), v.number % 0x10000, 'number: 2 bytes little-endian');
      const key = v.from === 'agent' ? keys.agentToMaster : keys.masterToAgent;
      const hmac = createHmac('sha256', key).update(Buffer.concat([numberBytes(v.number), body])).digest();
      t.equal(raw.subarray(raw.length - 12, raw.length - 4).toString('hex'), hmac.subarray(0, 8).toString('hex'), 'tag: HMAC-SHA256(key, number LE64 || body), 8 bytes');
      t.equal(v.tag, hmac.subarray(0, 8).toString('hex'), 'tag field');
    }
  });
}

function vec(name: string): Vector {
  return file.vectors.find((v) => v.name === name)!;
}

t.test('a 10-byte stdout chunk costs 18 bytes of overhead: 28 on the wire', async (t) => {
  const v = vec('stdout-10-bytes');
  t.equal(v.number, 0);
  t.equal(Buffer.from(v.body, 'hex').length, 12, 'body: 1 head + 1 length + 10 data');
  t.equal(v.wireBytes, 28, '28 bytes on the wire: 12 body + 2 number + 8 tag + 4 CRC + 1 COBS + 1 delimiter');
  t.equal(file.wireCost.stdout10Bytes, 28);
  t.equal(v.hex.slice(2, 4), '20', 'output head of stream 0 stdout is 0x20 (-1)');
  t.equal(vec('stderr-stream-3').body.slice(0, 2), '27', 'stream 3 stderr: head -8 = 0x27');
});

t.test('the 300-byte body crosses a COBS block boundary', async (t) => {
  const v = vec('body-300-bytes');
  t.equal(v.body.length / 2, 300);
  t.equal(v.hex.slice(0, 2), 'ff', 'first block: code 0xff, 254 bytes');
  t.equal(v.wireBytes, 300 + 14 + 2 + 1, 'body + trailer, one code byte per block (two: a 0x00 in the number ends the second), delimiter');
});

t.test('the zero-filled body is COBS-stuffed', async (t) => {
  const v = vec('data-with-zeros');
  t.ok(Buffer.from(v.body, 'hex').includes(0), 'the body has 0x00 bytes');
  t.equal(Buffer.from(v.hex, 'hex').subarray(0, -1).indexOf(0), -1, 'the frame has none but the delimiter');
});

t.test('the handshake vectors are reproducible from the documented inputs', async (t) => {
  const hmac = (input: string) => createHmac('sha256', Buffer.from(h.secretBytes, 'hex')).update(Buffer.from(input, 'hex')).digest('hex');
  t.equal(Buffer.from(h.secretBytes, 'hex').toString(), 'sesame');
  t.equal(h.masterInput, Buffer.from('tether/2 master\0').toString('hex') + h.helloBody + h.challengeParams);
  t.equal(h.agentInput, Buffer.from('tether/2 agent\0').toString('hex') + h.helloBody + h.challengeParams);
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

t.test('the frame keys are reproducible from the documented inputs (HKDF written out from RFC 5869)', async (t) => {
  const secret = Buffer.from(h.secretBytes, 'hex');
  const salt = Buffer.from(h.agentNonce + h.masterNonce, 'hex');
  t.equal(h.keys.salt, salt.toString('hex'), 'salt = agent nonce || master nonce');
  const prk = createHmac('sha256', salt).update(secret).digest();
  // Both keys are 32 bytes: one block of HKDF-Expand, T(1) = HMAC(PRK, info || 0x01).
  const expand = (info: string) => createHmac('sha256', prk).update(Buffer.concat([Buffer.from(info), Buffer.from([1])])).digest('hex');
  t.equal(h.keys.agentToMasterInfo, 'tether/2 agent to master');
  t.equal(h.keys.masterToAgentInfo, 'tether/2 master to agent');
  t.equal(expand(h.keys.agentToMasterInfo), h.keys.agentToMaster, 'agent-to-master key');
  t.equal(expand(h.keys.masterToAgentInfo), h.keys.masterToAgent, 'master-to-agent key');
  const derived = deriveKeys(secret, Buffer.from(h.agentNonce, 'hex'), Buffer.from(h.masterNonce, 'hex'));
  t.equal(derived.agentToMaster.toString('hex'), h.keys.agentToMaster, 'and the reference derives the same');
  const example = file.handshake.tagExample as Record<string, string>;
  t.equal(createHmac('sha256', keys.agentToMaster).update(Buffer.from(example.input, 'hex')).digest('hex'), example.hmac, 'the tag example');
  t.equal(example.hmac.slice(0, 16), vec('stdout-10-bytes').tag, 'whose first 8 bytes are the tag of stdout-10-bytes');
});

t.test('PROTOCOL.md agrees with the code and the vectors', async (t) => {
  const dir = join(__dirname, '..', 'firmware-notes');
  const doc = readFileSync(join(dir, 'PROTOCOL.md'), 'utf8');
  const cddl = readFileSync(join(dir, 'tether.cddl'), 'utf8');
  t.ok(doc.includes(cddl.trimEnd()), 'tether.cddl is inlined verbatim');
  const cost = file.wireCost as Record<string, number>;
  t.ok(doc.includes(`**${cost.stdout10Bytes}** (18 of overhead)`), `the 10-byte chunk: ${cost.stdout10Bytes} bytes`);
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
  t.equal(PROTOCOL_VERSION, 2);
  t.same(Capability, { DEFLATE: 1, RESUME: 2, SELECTIVE_REPEAT: 4 });
  for (const [rule, min, max] of [['max-frame', MIN_MAX_FRAME, 2 ** 32 - 1], ['keepalive', MIN_KEEPALIVE_SECONDS, MAX_KEEPALIVE_SECONDS], ['window', MIN_WINDOW, MAX_WINDOW]] as const) {
    t.match(cddl, new RegExp(`^${rule} = ${min}\\.\\.${max}\\b`, 'm'), `CDDL ${rule}: the bounds the code checks, ${min} to ${max}`);
  }
  for (const key of ['agentToMaster', 'masterToAgent']) t.ok(doc.includes(h.keys[key]), `the ${key} key of the worked example`);
  t.ok(doc.includes(vec('stdout-10-bytes').hex.match(/../g)!.join(' ')), 'the worked example frame, byte for byte');
});

t.test('a reader written in Python from PROTOCOL.md alone agrees with every vector', async (t) => {
  const run = spawnSync('python3', [join(__dirname, '..', 'firmware-notes', 'check_vectors.py'), VECTORS_PATH], { encoding: 'utf8', timeout: 60_000 });
  t.equal(run.status, 0, run.stdout + run.stderr);
  t.match(run.stdout, new RegExp(`${file.vectors.length} vectors checked, 0 failures`));
});
