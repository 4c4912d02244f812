/**
 * Generates firmware-notes/vectors.json with the real encoder (wire/*.ts).
 *
 *   npx ts-node-transpile-only firmware-notes/make-vectors.ts          # rewrite vectors.json
 *   npx ts-node-transpile-only firmware-notes/make-vectors.ts --check  # exit 1 if it is stale
 *
 * test/vectors.test.ts re-derives every vector with buildVectors() and
 * compares it byte for byte with the file, then decodes every frame back.
 *
 * JSON conventions of the `message` field: `type` is the message name
 * (OUTPUT for the output head); a CBOR byte string is {"hex": "..."}; every
 * other value is the JSON value of the CBOR item (null is CBOR null).
 */
import { createHmac } from 'node:crypto';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Compressor } from '../wire/compression';
import { crc32c } from '../wire/crc32c';
import { FrameAuth, KEY_LABELS, type SessionKeys, deriveKeys, numberBytes, wireNumber } from '../wire/frame-auth';
import { AUTHENTICATED_CRC_PREFIX, encodeAuthenticatedFrame, encodeHandshakeFrame } from '../wire/framing';
import { PROTOCOL_VERSION, proof } from '../wire/handshake';
import {
  type ChallengeParams,
  type HelloParams,
  type Message,
  MsgType,
  type OutgoingMessage,
  encodeChallengeParams,
  encodeMessage,
} from '../wire/messages';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Vector {
  name: string;
  description: string;
  /** Who sends it: its tag is made with that direction's key. */
  from: 'agent' | 'master';
  /**
   * The frame number its tag covers: the sequence number of a sequenced
   * frame, the link-frame number of a link frame; null for a handshake frame
   * (no number, no tag).
   */
  number: number | null;
  message: { [key: string]: Json };
  /** Frame body (the CBOR sequence), hex. */
  body: string;
  /** The 8-byte tag, hex: HMAC-SHA256(key of `from`, number as 8 bytes LE || body), first 8 bytes; null for handshake frames. */
  tag: string | null;
  /** CRC-32C as sent (little-endian on the wire), as a hex number: over body (handshake), or 0x02 || body || number || tag. */
  crc: string;
  /** The whole wire frame: COBS(body || [number || tag ||] CRC) followed by the 0x00 delimiter. */
  hex: string;
  /** Bytes on the wire (hex.length / 2). */
  wireBytes: number;
  /**
   * Compressed bodies (deflate capability): `body` is 0xff + raw deflate data;
   * `plainBody` is the message body it inflates to, `history` the preset
   * dictionary (the direction's earlier plain bodies, last 32 KiB).
   */
  deflate?: { plainBody: string; history: string };
}

export interface VectorFile {
  protocol: string;
  note: string;
  handshake: { [key: string]: Json };
  wireCost: { [key: string]: Json };
  vectors: Vector[];
}

// ---- the fixed inputs of the handshake vectors --------------------------------

export const SECRET = 'sesame';
export const WORKER = 'board-01';
/** 32 bytes 0x00, 0x01, ... 0x1f. */
export const AGENT_NONCE = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
/** 32 bytes 0x20, 0x21, ... 0x3f. */
export const MASTER_NONCE = Buffer.from(Array.from({ length: 32 }, (_, i) => 0x20 + i));
/** 16 bytes 0xa0 ... 0xaf. */
export const SESSION_ID = Buffer.from(Array.from({ length: 16 }, (_, i) => 0xa0 + i));

export const HELLO_PARAMS: HelloParams = {
  versionMin: PROTOCOL_VERSION,
  versionMax: PROTOCOL_VERSION,
  name: WORKER,
  nonce: AGENT_NONCE,
  caps: 0,
  maxFrame: 1024,
};

/** What the reference hub answers with its defaults (keepalive 10 s, window 256 KiB) to that HELLO. */
export const CHALLENGE_PARAMS: ChallengeParams = {
  version: PROTOCOL_VERSION,
  nonce: MASTER_NONCE,
  caps: 0,
  maxFrame: 1024,
  keepalive: 10,
  window: 262144,
};

// ---- JSON <-> message -------------------------------------------------------------

const NAMES: Record<number, string> = Object.fromEntries(Object.entries(MsgType).map(([k, v]) => [v, k]));

export function toJsonValue(v: unknown): Json {
  if (v === null || v === undefined) return null;
  if (v instanceof Uint8Array) return { hex: Buffer.from(v).toString('hex') };
  if (Array.isArray(v)) return v.map(toJsonValue);
  if (typeof v === 'object') {
    const out: { [key: string]: Json } = {};
    for (const [k, x] of Object.entries(v as object)) out[k] = toJsonValue(x);
    return out;
  }
  if (typeof v === 'bigint') throw new Error('bigint values have no JSON form here');
  return v as Json;
}

export function fromJsonValue(v: Json): unknown {
  if (Array.isArray(v)) return v.map(fromJsonValue);
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === 'hex' && typeof v.hex === 'string') return Buffer.from(v.hex, 'hex');
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = fromJsonValue(x);
    return out;
  }
  return v;
}

/** A decoded (or outgoing) message as the JSON of vectors.json. */
export function messageToJson(
  m: Message | OutgoingMessage | { type: typeof MsgType.CHALLENGE; params: ChallengeParams; paramsBytes: Buffer; proof: Buffer },
): { [key: string]: Json } {
  const { type, ...fields } = m as { type: number | 'output' } & Record<string, unknown>;
  delete fields.raw; // HELLO: the body itself
  return { type: type === 'output' ? 'OUTPUT' : NAMES[type], ...(toJsonValue(fields) as { [key: string]: Json }) };
}

/** The message a vectors.json `message` describes, ready for encodeMessage. */
export function messageFromJson(json: { [key: string]: Json }): OutgoingMessage {
  const { type, ...rest } = json;
  const fields = fromJsonValue(rest) as Record<string, unknown>;
  if (type === 'OUTPUT') return { type: 'output', ...fields } as OutgoingMessage;
  const code = (MsgType as Record<string, number>)[String(type)];
  if (code === undefined) throw new Error(`unknown message name ${String(type)}`);
  if (code === MsgType.CHALLENGE) {
    return { type: MsgType.CHALLENGE, paramsBytes: fields.paramsBytes as Buffer, proof: fields.proof as Buffer };
  }
  return { type: code, ...fields } as OutgoingMessage;
}

// ---- the vectors ------------------------------------------------------------------

interface Spec {
  name: string;
  description: string;
  from: 'agent' | 'master';
  /** Frame number (sequence number, or link-frame number); null: a handshake frame. */
  number: number | null;
  message: OutgoingMessage;
  /** Send compressed, with these earlier plain bodies of the direction as history. */
  deflateAfter?: Buffer[];
}

function helloBody(): Buffer {
  return encodeMessage({ type: MsgType.HELLO, params: HELLO_PARAMS });
}

export function handshakeInputs() {
  const hello = helloBody();
  const params = encodeChallengeParams(CHALLENGE_PARAMS);
  const masterInput = Buffer.concat([Buffer.from(`tether/${PROTOCOL_VERSION} master\0`), hello, params]);
  const agentInput = Buffer.concat([Buffer.from(`tether/${PROTOCOL_VERSION} agent\0`), hello, params]);
  return {
    hello,
    params,
    masterInput,
    agentInput,
    masterProof: proof(SECRET, 'master', hello, params),
    agentProof: proof(SECRET, 'agent', hello, params),
    keys: deriveKeys(Buffer.from(SECRET, 'utf8'), AGENT_NONCE, MASTER_NONCE),
  };
}

const bytes = (s: string) => Buffer.from(s, 'latin1');

const testLines = (from: number, to: number) =>
  bytes(Array.from({ length: to - from + 1 }, (_, i) => `PASS: test_${String(from + i).padStart(4, '0')}\n`).join(''));
const deflate1 = { type: 'output', stream: 0, channel: 0, data: testLines(1, 8) } as const;

function specs(): Spec[] {
  const h = handshakeInputs();
  const block300 = Buffer.from(Array.from({ length: 296 }, (_, i) => (i % 255) + 1));
  return [
    {
      name: 'stdout-10-bytes',
      description:
        'A 10-byte stdout chunk on stream 0, the first sequenced frame of the session (seq 0), agent -> master. ' +
        'Body: output head 0x20 (-1 - (2*0 + 0)), byte-string head 0x4a, 10 bytes; then the number 00 00, the 8-byte tag, the CRC. ' +
        '18 bytes of overhead: 2 of CBOR heads, 2 of number, 8 of tag, 4 of CRC, 1 COBS code byte, 1 delimiter: 28 bytes on the wire.',
      from: 'agent', number: 0,
      message: { type: 'output', stream: 0, channel: 0, data: bytes('0123456789') },
    },
    {
      name: 'stderr-stream-3',
      description: 'stderr chunk on stream 3: head -1 - (2*3 + 1) = -8, one byte 0x27.',
      from: 'agent', number: 1,
      message: { type: 'output', stream: 3, channel: 1, data: bytes('warning: x\n') },
    },
    {
      name: 'stdout-stream-12',
      description: 'stdout on stream 12: head -1 - 24 = -25 no longer fits the initial byte: 0x38 0x18.',
      from: 'agent', number: 2,
      message: { type: 'output', stream: 12, channel: 0, data: bytes('ok\n') },
    },
    {
      name: 'stdout-seq-2^32+5',
      description:
        'The sequence number is 64-bit: this frame is sent at seq 4294967301 (0x100000005). The frame carries its ' +
        'low 16 bits (05 00); the tag covers all 64: HMAC over 05 00 00 00 01 00 00 00 || body.',
      from: 'agent', number: 4294967301,
      message: { type: 'output', stream: 0, channel: 0, data: bytes('0123456789') },
    },
    {
      name: 'hello',
      description:
        `Agent -> master, handshake frame (no number, no tag). Worker '${WORKER}', versions 2-2, agent nonce 00 01 .. 1f, caps 0, ` +
        'max frame 1024. The parameter keys are integers (0x01 .. 0x06).',
      from: 'agent', number: null,
      message: { type: MsgType.HELLO, params: HELLO_PARAMS },
    },
    {
      name: 'hello-window',
      description:
        'As "hello", from an agent that takes a window of at most 4096 bytes (key 10, section 6.3): the master grants ' +
        'min(4096, its own). Not part of the handshake below, whose proofs cover "hello".',
      from: 'agent', number: null,
      message: { type: MsgType.HELLO, params: { ...HELLO_PARAMS, window: 4096 } },
    },
    {
      name: 'challenge',
      description:
        'Master -> agent, handshake frame. Parameters (bstr-wrapped CBOR map): version 2, master nonce 20 21 .. 3f, ' +
        `caps 0, max frame 1024, keepalive 10 s, window 262144. Proof = HMAC-SHA256(key "${SECRET}", ` +
        '"tether/2 master" 00 || HELLO body (vector "hello") || parameter bytes); see handshake.masterInput.',
      from: 'master', number: null,
      message: { type: MsgType.CHALLENGE, paramsBytes: h.params, proof: h.masterProof },
    },
    {
      name: 'proof',
      description:
        `Agent -> master, handshake frame. Proof = HMAC-SHA256(key "${SECRET}", "tether/2 agent" 00 || HELLO body || ` +
        'parameter bytes); see handshake.agentInput.',
      from: 'agent', number: null,
      message: { type: MsgType.PROOF, proof: h.agentProof },
    },
    {
      name: 'welcome',
      description:
        'Master -> agent: the first authenticated frame, link frame number 0, tagged with the master-to-agent key of ' +
        'the handshake vectors (handshake.keys). Session id a0 .. af, not resumed, next sequence number 0.',
      from: 'master', number: 0,
      message: { type: MsgType.WELCOME, session: SESSION_ID, resumed: false, nextSeq: 0 },
    },
    {
      name: 'info',
      description: "Agent -> master, the agent's first sequenced frame (seq 0): Buildbot's worker info keys.",
      from: 'agent', number: 0,
      message: {
        type: MsgType.INFO,
        info: {
          os: 'none',
          arch: 'armv7e-m',
          hostname: WORKER,
          basedir: '/b',
          version: '0.1.0',
          admin: '',
          host: '',
          numcpus: 1,
          environ: {},
          commands: ['shell', 'stat', 'mkdir'],
        },
      },
    },
    { name: 'ack', description: 'Agent -> master, link frame number 1: every sequenced frame below 32 arrived.', from: 'agent', number: 1, message: { type: MsgType.ACK, nextSeq: 32 } },
    {
      name: 'nak',
      description: 'Agent -> master, link frame number 2, go-back-N (selective repeat not granted): frames below 7 arrived, a frame was lost: send again from 7.',
      from: 'agent', number: 2,
      message: { type: MsgType.NAK, nextSeq: 7 },
    },
    {
      name: 'ack-selective',
      description:
        'Agent -> master, link frame number 4, selective repeat: frames below 7 arrived, and of those after 7, ' +
        'bits 1 and 2 of the bitmap (0x06) say 9 and 10 arrived and are held; 8 is missing.',
      from: 'agent', number: 4,
      message: { type: MsgType.ACK, nextSeq: 7, received: Buffer.from([0x06]) },
    },
    {
      name: 'nak-selective',
      description:
        'Agent -> master, link frame number 5, selective repeat: as ack-selective, and a frame arrived damaged ' +
        'after those (the first frame sent after 10, on an in-order line).',
      from: 'agent', number: 5,
      message: { type: MsgType.NAK, nextSeq: 7, received: Buffer.from([0x06]) },
    },
    { name: 'ping', description: 'Master -> agent, link frame number 1: keepalive, token 1.', from: 'master', number: 1, message: { type: MsgType.PING, token: 1 } },
    { name: 'pong', description: 'Agent -> master, link frame number 3: the answer to PING 1.', from: 'agent', number: 3, message: { type: MsgType.PONG, token: 1 } },
    {
      name: 'error',
      description: 'Master -> agent, link frame number 2: ERROR code 17 (INTERNAL), then the sender closes.',
      from: 'master', number: 2,
      message: { type: MsgType.ERROR, code: 17, message: 'the master is restarting' },
    },
    {
      name: 'start-shell',
      description: "Master -> agent: START of Buildbot's shell command on stream 0, arguments as Buildbot names them.",
      from: 'master', number: 0,
      message: {
        type: MsgType.START,
        stream: 0,
        command: 'shell',
        args: {
          workdir: 'build',
          command: ['make', 'check'],
          env: { LANG: 'C' },
          want_stdout: 1,
          want_stderr: 1,
          logfiles: {},
          timeout: 1200,
          maxTime: null,
          usePTY: false,
        },
      },
    },
    {
      name: 'start-stat',
      description: 'Master -> agent: START of stat on stream 1.',
      from: 'master', number: 1,
      message: { type: MsgType.START, stream: 1, command: 'stat', args: { path: 'build/out.bin' } },
    },
    { name: 'update-rc', description: "Agent -> master: the 'rc' update, 0.", from: 'agent', number: 3, message: { type: MsgType.UPDATE, stream: 0, key: 'rc', value: 0 } },
    {
      name: 'update-elapsed',
      description: "Agent -> master: the 'elapsed' update, a float (the reference sends float64, 0xfb).",
      from: 'agent', number: 4,
      message: { type: MsgType.UPDATE, stream: 0, key: 'elapsed', value: 0.25 },
    },
    { name: 'complete-ok', description: 'Agent -> master: stream 0 completed (failure null).', from: 'agent', number: 5, message: { type: MsgType.COMPLETE, stream: 0, failure: null } },
    {
      name: 'complete-failed',
      description:
        "Agent -> master: stream 1 failed: [code 17 INTERNAL, buildbot-worker's exception text], here of an upload_directory " +
        'whose source does not exist. (stat of a missing file does not fail: it sends UPDATE rc 2, then COMPLETE null.)',
      from: 'agent', number: 6,
      message: {
        type: MsgType.COMPLETE,
        stream: 1,
        failure: { code: 17, message: "FileNotFoundError: [Errno 2] No such file or directory: '/b/build/dist'" },
      },
    },
    { name: 'interrupt', description: 'Master -> agent: interrupt stream 0.', from: 'master', number: 2, message: { type: MsgType.INTERRUPT, stream: 0, why: 'timeout' } },
    {
      name: 'data',
      description: 'File data on stream 1 (download_file: master -> agent; upload_*: agent -> master).',
      from: 'master', number: 3,
      message: { type: MsgType.DATA, stream: 1, data: bytes('#!/bin/sh\n') },
    },
    {
      name: 'data-with-zeros',
      description: 'A body full of 0x00 bytes (stream 0 itself encodes as 0x00): COBS replaces each 0x00 by a code byte.',
      from: 'master', number: 4,
      message: { type: MsgType.DATA, stream: 0, data: Buffer.from([0, 1, 0, 0, 2, 0]) },
    },
    {
      name: 'eof-times',
      description: 'Agent -> master: end of an upload with keepstamp: [atime, mtime] in seconds (float64).',
      from: 'agent', number: 7,
      message: { type: MsgType.EOF, stream: 1, times: { atime: 1700000000.25, mtime: 1700000000.5 } },
    },
    { name: 'eof', description: 'End of file data without times (null).', from: 'master', number: 5, message: { type: MsgType.EOF, stream: 1, times: null } },
    { name: 'credit', description: 'Returns 65536 bytes of flow-control credit on stream 0.', from: 'master', number: 6, message: { type: MsgType.CREDIT, stream: 0, bytes: 65536 } },
    {
      name: 'log',
      description: "Agent -> master: new bytes of the watched logfile 'test.log' on stream 0.",
      from: 'agent', number: 8,
      message: { type: MsgType.LOG, stream: 0, name: 'test.log', data: bytes('PASS: t1\n') },
    },
    {
      name: 'header',
      description: "Agent -> master: Buildbot 'header' text on stream 0.",
      from: 'agent', number: 9,
      message: { type: MsgType.HEADER, stream: 0, text: 'make check\n in dir /b/build\n' },
    },
    { name: 'print', description: 'Master -> agent: a line for the agent log.', from: 'master', number: 7, message: { type: MsgType.PRINT, text: 'hello from the master' } },
    { name: 'shutdown', description: 'Master -> agent: shut down (no fields).', from: 'master', number: 8, message: { type: MsgType.SHUTDOWN } },
    {
      name: 'reject-stream',
      description: 'Agent -> master: START on stream 2 refused, code 13 UNKNOWN_COMMAND.',
      from: 'agent', number: 10,
      message: { type: MsgType.REJECT, stream: 2, code: 13, message: "this agent has no command 'git'" },
    },
    {
      name: 'reject-no-stream',
      description: 'Either way: a sequenced frame whose body could not be decoded, code 5 UNKNOWN_MESSAGE, stream null.',
      from: 'agent', number: 11,
      message: { type: MsgType.REJECT, stream: null, code: 5, message: 'unknown message type 42' },
    },
    { name: 'stdin', description: "Master -> agent: bytes for stream 0's stdin.", from: 'master', number: 9, message: { type: MsgType.STDIN, stream: 0, data: bytes('y\n') } },
    { name: 'stdin-end', description: "Master -> agent: stream 0's stdin is closed (null).", from: 'master', number: 10, message: { type: MsgType.STDIN, stream: 0, data: null } },
    {
      name: 'fragment',
      description: 'Master -> agent: the first piece of a message body larger than max_frame (more = true); the pieces, joined, are the body of one message.',
      from: 'master', number: 11,
      message: { type: MsgType.FRAGMENT, more: true, data: encodeMessage({ type: MsgType.PRINT, text: 'a long message' }).subarray(0, 6) },
    },
    {
      name: 'fragment-last',
      description: 'Master -> agent: the last piece (more = false); with the previous vector it makes PRINT "a long message".',
      from: 'master', number: 12,
      message: { type: MsgType.FRAGMENT, more: false, data: encodeMessage({ type: MsgType.PRINT, text: 'a long message' }).subarray(6) },
    },
    {
      name: 'body-300-bytes',
      description:
        'A 300-byte body (stdout, 296 bytes 01 02 .. ff 01 ..): head 0x20, 0x59 0x01 0x28, data. ' +
        'The body has no 0x00: its first 254 bytes go in one COBS block (code 0xff); the number 0c 00 ends the next block.',
      from: 'agent', number: 12,
      message: { type: 'output', stream: 0, channel: 0, data: block300 },
    },
    {
      name: 'deflate-first',
      description:
        'Deflate capability: the first compressed body of a direction (empty history, no dictionary): ' +
        '0xff then raw deflate (zlib level 6) of the plain body, a stdout chunk of eight "PASS: test_000N" lines.',
      from: 'agent', number: 13,
      message: deflate1,
      deflateAfter: [],
    },
    {
      name: 'deflate-with-history',
      description:
        'Deflate capability: the next body of the same direction, compressed with the plain body of deflate-first ' +
        'as the preset dictionary (the history), so the similar lines cost a few bytes.',
      from: 'agent', number: 14,
      message: { type: 'output', stream: 0, channel: 0, data: testLines(9, 16) },
      deflateAfter: [encodeMessage(deflate1)],
    },
    {
      name: 'deflate-beyond-frame',
      description:
        'Deflate capability: a body that inflates to more than a small max_frame. With max_frame 512 (the reference ' +
        'agent\'s offer on serial lines), the body as sent fits, and its 2404-byte plain body (150 "PASS: test_NNNN" lines, ' +
        'compressed with deflate-first\'s plain body as the history) is within the inflated limit max(512, 16384).',
      from: 'agent', number: 15,
      message: { type: 'output', stream: 0, channel: 0, data: testLines(9, 158) },
      deflateAfter: [encodeMessage(deflate1)],
    },
  ];
}

function vector(spec: Spec, keys: SessionKeys): Vector {
  const plain = encodeMessage(spec.message);
  let body = plain;
  let deflate: Vector['deflate'];
  if (spec.deflateAfter) {
    const compressor = new Compressor();
    for (const earlier of spec.deflateAfter) compressor.pack(earlier);
    body = compressor.pack(plain);
    if (body[0] !== 0xff) throw new Error(`${spec.name}: deflate did not make the body smaller`);
    deflate = { plainBody: plain.toString('hex'), history: Buffer.concat(spec.deflateAfter).toString('hex') };
  }
  let frame: Buffer;
  let tag: Buffer | null = null;
  let crc: number;
  if (spec.number === null) {
    frame = encodeHandshakeFrame(body);
    crc = crc32c(body);
  } else {
    tag = new FrameAuth(keys, spec.from).tag(spec.number, body);
    const low = Buffer.alloc(2);
    low.writeUInt16LE(wireNumber(spec.number));
    frame = encodeAuthenticatedFrame(body, wireNumber(spec.number), tag);
    crc = crc32c(Buffer.concat([Buffer.from([AUTHENTICATED_CRC_PREFIX]), body, low, tag]));
  }
  return {
    name: spec.name,
    description: spec.description,
    from: spec.from,
    number: spec.number,
    message:
      spec.message.type === MsgType.CHALLENGE
        ? messageToJson({ type: MsgType.CHALLENGE, params: CHALLENGE_PARAMS, paramsBytes: spec.message.paramsBytes, proof: spec.message.proof })
        : messageToJson(spec.message),
    body: body.toString('hex'),
    tag: tag && tag.toString('hex'),
    crc: '0x' + crc.toString(16).padStart(8, '0'),
    hex: frame.toString('hex'),
    wireBytes: frame.length,
    ...(deflate ? { deflate } : {}),
  };
}

export function buildVectors(): VectorFile {
  const h = handshakeInputs();
  const vectors = specs().map((spec) => vector(spec, h.keys));
  const size = (name: string) => vectors.find((v) => v.name === name)!.wireBytes;
  const handshake = ['hello', 'challenge', 'proof', 'welcome'].map(size);
  return {
    protocol: `tether/${PROTOCOL_VERSION}`,
    note:
      'Generated by firmware-notes/make-vectors.ts from the reference encoder; test/vectors.test.ts checks it. ' +
      'Every vector is independent. number is the frame number its tag covers (the sequence number of a sequenced ' +
      'frame, the link-frame number of a link frame); null for handshake frames, which have no number and no tag. ' +
      'Tags use the keys in handshake.keys, derived from the handshake vectors.',
    handshake: {
      secret: SECRET,
      secretBytes: Buffer.from(SECRET, 'utf8').toString('hex'),
      worker: WORKER,
      agentNonce: AGENT_NONCE.toString('hex'),
      masterNonce: MASTER_NONCE.toString('hex'),
      helloBody: h.hello.toString('hex'),
      challengeParams: h.params.toString('hex'),
      masterInput: h.masterInput.toString('hex'),
      masterProof: h.masterProof.toString('hex'),
      agentInput: h.agentInput.toString('hex'),
      agentProof: h.agentProof.toString('hex'),
      keys: {
        algorithm: 'HKDF-SHA256 (RFC 5869): IKM secretBytes, salt agentNonce || masterNonce, info the label, 32 bytes',
        salt: Buffer.concat([AGENT_NONCE, MASTER_NONCE]).toString('hex'),
        agentToMasterInfo: KEY_LABELS.agentToMaster,
        masterToAgentInfo: KEY_LABELS.masterToAgent,
        agentToMaster: h.keys.agentToMaster.toString('hex'),
        masterToAgent: h.keys.masterToAgent.toString('hex'),
      },
      tagExample: {
        vector: 'stdout-10-bytes',
        key: 'agentToMaster',
        input: Buffer.concat([numberBytes(0), encodeMessage({ type: 'output', stream: 0, channel: 0, data: bytes('0123456789') })]).toString('hex'),
        hmac: createHmac('sha256', h.keys.agentToMaster)
          .update(Buffer.concat([numberBytes(0), encodeMessage({ type: 'output', stream: 0, channel: 0, data: bytes('0123456789') })]))
          .digest('hex'),
      },
    },
    wireCost: {
      stdout10Bytes: size('stdout-10-bytes'),
      hello: handshake[0],
      challenge: handshake[1],
      proof: handshake[2],
      welcome: handshake[3],
      handshakeTotal: handshake.reduce((a, b) => a + b, 0),
      agentToMaster: handshake[0] + handshake[2],
      masterToAgent: handshake[1] + handshake[3],
    },
    vectors,
  };
}

export const VECTORS_PATH = join(__dirname, 'vectors.json');

export function renderVectors(): string {
  return JSON.stringify(buildVectors(), null, 2) + '\n';
}

if (require.main === module) {
  const text = renderVectors();
  if (process.argv.includes('--check')) {
    const current = readFileSync(VECTORS_PATH, 'utf8');
    if (current !== text) {
      console.error('firmware-notes/vectors.json is stale: run npx ts-node-transpile-only firmware-notes/make-vectors.ts');
      process.exit(1);
    }
    console.log('vectors.json is up to date');
  } else {
    writeFileSync(VECTORS_PATH, text);
    const file = JSON.parse(text) as VectorFile;
    console.log(`wrote ${file.vectors.length} vectors to ${VECTORS_PATH}`);
    console.log(JSON.stringify(file.wireCost));
  }
}
