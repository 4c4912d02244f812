/**
 * Every message of protocol version 2. A frame body is a CBOR sequence: the
 * message type (a small integer) followed by the message's fields. Types 1-9
 * are link messages (no sequence number); 10-23 and the negative output heads
 * are sequenced. firmware-notes/PROTOCOL.md has the CDDL for each.
 */
import { decodeSequence, encodeSequence } from './cbor';
import { TetherError } from './errors';

export const MsgType = {
  HELLO: 1,
  CHALLENGE: 2,
  PROOF: 3,
  WELCOME: 4,
  ACK: 5,
  NAK: 6,
  PING: 7,
  PONG: 8,
  ERROR: 9,
  INFO: 10,
  START: 11,
  UPDATE: 12,
  COMPLETE: 13,
  INTERRUPT: 14,
  DATA: 15,
  EOF: 16,
  CREDIT: 17,
  LOG: 18,
  HEADER: 19,
  PRINT: 20,
  SHUTDOWN: 21,
  REJECT: 22,
  STDIN: 23,
  FRAGMENT: 24,
} as const;

/** Output channels carried by the one-byte output head: -1 - (2 * stream + channel). */
export const Channel = { STDOUT: 0, STDERR: 1 } as const;
export type ChannelId = (typeof Channel)[keyof typeof Channel];

export type Bytes = Buffer;

export interface HelloParams {
  versionMin: number;
  versionMax: number;
  name: string;
  nonce: Bytes;
  caps: number;
  maxFrame: number;
  /** A session the agent wants to resume, with the next sequence number it expects. */
  resume?: { session: Bytes; nextSeq: number };
  /** The largest window the agent takes (key 10); absent: any the master chooses within the bounds. */
  window?: number;
}

export interface ChallengeParams {
  version: number;
  nonce: Bytes;
  caps: number;
  maxFrame: number;
  /** Seconds between keepalive pings; a peer silent for three of them is dead. */
  keepalive: number;
  /** Initial flow-control credit of every stream, in bytes, each direction. */
  window: number;
}

export type Message =
  | { type: typeof MsgType.HELLO; params: HelloParams; raw: Bytes }
  | { type: typeof MsgType.CHALLENGE; params: ChallengeParams; paramsBytes: Bytes; proof: Bytes }
  | { type: typeof MsgType.PROOF; proof: Bytes }
  | { type: typeof MsgType.WELCOME; session: Bytes; resumed: boolean; nextSeq: number }
  /**
   * ACK: every sequenced frame below nextSeq arrived; NAK: the same, and a
   * frame was lost. `received` (selective repeat): bit i set when frame
   * nextSeq + 1 + i arrived and is held.
   */
  | { type: typeof MsgType.ACK; nextSeq: number; received?: Bytes }
  | { type: typeof MsgType.NAK; nextSeq: number; received?: Bytes }
  | { type: typeof MsgType.PING; token: number }
  | { type: typeof MsgType.PONG; token: number }
  | { type: typeof MsgType.ERROR; code: number; message: string }
  | { type: typeof MsgType.INFO; info: Record<string, unknown> }
  | { type: typeof MsgType.START; stream: number; command: string; args: Record<string, unknown> }
  | { type: typeof MsgType.UPDATE; stream: number; key: string; value: unknown }
  | { type: typeof MsgType.COMPLETE; stream: number; failure: { code: number; message: string } | null }
  | { type: typeof MsgType.INTERRUPT; stream: number; why: string }
  | { type: typeof MsgType.DATA; stream: number; data: Bytes }
  | { type: typeof MsgType.EOF; stream: number; times: { atime: number; mtime: number } | null }
  | { type: typeof MsgType.CREDIT; stream: number; bytes: number }
  | { type: typeof MsgType.LOG; stream: number; name: string; data: Bytes }
  | { type: typeof MsgType.HEADER; stream: number; text: string }
  | { type: typeof MsgType.PRINT; text: string }
  | { type: typeof MsgType.SHUTDOWN }
  | { type: typeof MsgType.REJECT; stream: number | null; code: number; message: string }
  | { type: typeof MsgType.STDIN; stream: number; data: Bytes | null }
  /** A piece of a sequenced message body too large for one frame; the last piece has more = false. */
  | { type: typeof MsgType.FRAGMENT; more: boolean; data: Bytes }
  | { type: 'output'; stream: number; channel: ChannelId; data: Bytes };

export type MessageOf<T extends Message['type']> = Extract<Message, { type: T }>;

// ---- encoding ----------------------------------------------------------

/** Room for the head of a message carrying payload (type, stream, byte-string length): at most 16 bytes. */
export const PAYLOAD_HEAD_BYTES = 16;

/** The head of a CBOR byte string of `n` bytes (preferred form). */
function byteStringHead(n: number): Buffer {
  return n < 24 ? Buffer.from([0x40 | n])
    : n < 0x100 ? Buffer.from([0x58, n])
    : n < 0x10000 ? Buffer.from([0x59, n >> 8, n & 0xff])
    : Buffer.from([0x5a, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
}

/** A message whose last field is payload bytes (output, DATA, LOG, STDIN), without them. */
export type PayloadFields =
  | { type: 'output'; stream: number; channel: ChannelId }
  | { type: typeof MsgType.DATA | typeof MsgType.STDIN; stream: number }
  | { type: typeof MsgType.LOG; stream: number; name: string };

/**
 * Everything of a payload message's body before its `length` data bytes: the
 * body is this head and the data, sent as parts (body-parts.ts). Output, the
 * hot path, takes two bytes of head for a short chunk.
 */
export function payloadHead(m: PayloadFields, length: number): Buffer {
  const fields =
    m.type === 'output' ? [-1 - (2 * m.stream + m.channel)]
    : m.type === MsgType.LOG ? [m.type, m.stream, m.name]
    : [m.type, m.stream];
  return Buffer.concat([encodeSequence(fields), byteStringHead(length)]);
}

export function encodeOutput(stream: number, channel: ChannelId, data: Uint8Array): Buffer {
  return Buffer.concat([payloadHead({ type: 'output', stream, channel }, data.length), data]);
}

function helloMap(p: HelloParams): Map<number, unknown> {
  const map = new Map<number, unknown>([[1, p.versionMin], [2, p.versionMax], [3, p.name], [4, p.nonce], [5, p.caps], [6, p.maxFrame]]);
  if (p.resume) {
    map.set(7, p.resume.session);
    map.set(8, p.resume.nextSeq);
  }
  if (p.window !== undefined) map.set(10, p.window);
  return map;
}

export function encodeChallengeParams(p: ChallengeParams): Buffer {
  return encodeSequence([
    new Map<number, unknown>([[1, p.version], [4, p.nonce], [5, p.caps], [6, p.maxFrame], [9, p.keepalive], [10, p.window]]),
  ]);
}

/** A message without the fields that only decoding fills in. */
export type OutgoingMessage =
  | Exclude<Message, { type: typeof MsgType.HELLO } | { type: typeof MsgType.CHALLENGE }>
  | { type: typeof MsgType.HELLO; params: HelloParams }
  | { type: typeof MsgType.CHALLENGE; paramsBytes: Bytes; proof: Bytes };

export function encodeMessage(m: OutgoingMessage): Buffer {
  switch (m.type) {
    case 'output': return encodeOutput(m.stream, m.channel, m.data);
    case MsgType.HELLO: return encodeSequence([m.type, helloMap(m.params)]);
    case MsgType.CHALLENGE: return encodeSequence([m.type, m.paramsBytes, m.proof]);
    case MsgType.PROOF: return encodeSequence([m.type, m.proof]);
    case MsgType.WELCOME: return encodeSequence([m.type, m.session, m.resumed, m.nextSeq]);
    case MsgType.ACK:
    case MsgType.NAK: return encodeSequence(m.received ? [m.type, m.nextSeq, m.received] : [m.type, m.nextSeq]);
    case MsgType.PING:
    case MsgType.PONG: return encodeSequence([m.type, m.token]);
    case MsgType.ERROR: return encodeSequence([m.type, m.code, m.message]);
    case MsgType.INFO: return encodeSequence([m.type, m.info]);
    case MsgType.START: return encodeSequence([m.type, m.stream, m.command, m.args]);
    case MsgType.UPDATE: return encodeSequence([m.type, m.stream, m.key, m.value]);
    case MsgType.COMPLETE:
      return encodeSequence([m.type, m.stream, m.failure && [m.failure.code, m.failure.message]]);
    case MsgType.INTERRUPT: return encodeSequence([m.type, m.stream, m.why]);
    case MsgType.DATA: return encodeSequence([m.type, m.stream, m.data]);
    case MsgType.EOF: return encodeSequence([m.type, m.stream, m.times && [m.times.atime, m.times.mtime]]);
    case MsgType.CREDIT: return encodeSequence([m.type, m.stream, m.bytes]);
    case MsgType.LOG: return encodeSequence([m.type, m.stream, m.name, m.data]);
    case MsgType.HEADER: return encodeSequence([m.type, m.stream, m.text]);
    case MsgType.PRINT: return encodeSequence([m.type, m.text]);
    case MsgType.SHUTDOWN: return encodeSequence([m.type]);
    case MsgType.REJECT: return encodeSequence([m.type, m.stream, m.code, m.message]);
    case MsgType.STDIN: return encodeSequence([m.type, m.stream, m.data]);
    case MsgType.FRAGMENT: return encodeSequence([m.type, m.more, m.data]);
  }
}

// ---- decoding ----------------------------------------------------------

function bad(why: string): never {
  throw new TetherError('BAD_MESSAGE', why);
}

const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isBytes = (v: unknown): v is Buffer => v instanceof Uint8Array;
const isMap = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !isBytes(v);

function uint(v: unknown, what: string): number {
  if (!isUint(v)) bad(`${what} must be an unsigned integer`);
  return v;
}
function text(v: unknown, what: string): string {
  if (typeof v !== 'string') bad(`${what} must be a text string`);
  return v;
}
function bytes(v: unknown, what: string, length?: number): Buffer {
  if (!isBytes(v)) bad(`${what} must be a byte string`);
  if (length !== undefined && v.length !== length) bad(`${what} must be ${length} bytes`);
  return Buffer.from(v.buffer, v.byteOffset, v.length);
}
function map(v: unknown, what: string): Record<string, unknown> {
  if (!isMap(v)) bad(`${what} must be a map`);
  return v;
}
function pair(v: unknown, what: string): [unknown, unknown] {
  if (!Array.isArray(v) || v.length !== 2) bad(`${what} must be a two-element array`);
  return [v[0], v[1]];
}

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
export const SESSION_ID_BYTES = 16;

function decodeHello(f: unknown[], raw: Buffer): Message {
  const m = map(f[0], 'hello parameters');
  const params: HelloParams = {
    versionMin: uint(m[1], 'hello version min'),
    versionMax: uint(m[2], 'hello version max'),
    name: text(m[3], 'hello name'),
    nonce: bytes(m[4], 'hello nonce', NONCE_BYTES),
    caps: uint(m[5] ?? 0, 'hello capabilities'),
    maxFrame: uint(m[6], 'hello max frame'),
  };
  if (m[7] !== undefined) {
    params.resume = { session: bytes(m[7], 'resume session', SESSION_ID_BYTES), nextSeq: uint(m[8], 'resume sequence') };
  }
  if (m[10] !== undefined) params.window = uint(m[10], 'hello window');
  return { type: MsgType.HELLO, params, raw };
}

export function decodeChallengeParams(paramsBytes: Buffer): ChallengeParams {
  const items = decodeSequence(paramsBytes);
  if (items.length !== 1) bad('challenge parameters must be one map');
  const m = map(items[0], 'challenge parameters');
  return {
    version: uint(m[1], 'challenge version'),
    nonce: bytes(m[4], 'challenge nonce', NONCE_BYTES),
    caps: uint(m[5] ?? 0, 'challenge capabilities'),
    maxFrame: uint(m[6], 'challenge max frame'),
    keepalive: uint(m[9], 'challenge keepalive'),
    window: uint(m[10], 'challenge window'),
  };
}

/** Fields each type needs at least; extra trailing fields are ignored (room to extend). */
const MIN_FIELDS: Record<number, number> = {
  1: 1, 2: 2, 3: 1, 4: 3, 5: 1, 6: 1, 7: 1, 8: 1, 9: 2, 10: 1, 11: 3, 12: 3, 13: 2,
  14: 2, 15: 2, 16: 2, 17: 2, 18: 3, 19: 2, 20: 1, 21: 0, 22: 3, 23: 2, 24: 2,
};

/** Types whose first field is the stream (REJECT's is not: it refuses a message, whatever stream that named). */
const STREAM_FIRST: ReadonlySet<number> = new Set([
  MsgType.START, MsgType.UPDATE, MsgType.COMPLETE, MsgType.INTERRUPT, MsgType.DATA, MsgType.EOF,
  MsgType.CREDIT, MsgType.LOG, MsgType.HEADER, MsgType.STDIN,
]);

/**
 * A stream message with a bad field whose stream did decode: the REJECT names
 * that stream, so that the command it was for fails instead of waiting
 * (PROTOCOL.md 8.4), and a START's id counts as used (8.1).
 */
export class MalformedMessage extends TetherError {
  constructor(why: string, readonly type: number, readonly stream: number) {
    super('BAD_MESSAGE', why);
  }
}

/**
 * Decodes a frame body that passed its CRC. Throws TetherError: BAD_MESSAGE
 * for a malformed body (MalformedMessage when its stream is known),
 * UNKNOWN_MESSAGE for a type this version does not know.
 */
export function decodeMessage(body: Buffer): Message {
  const items = decodeSequence(body);
  if (items.length === 0) bad('empty message');
  const [head, ...f] = items;
  if (typeof head !== 'number' || !Number.isSafeInteger(head)) bad('message type must be an integer');
  if (head >= 0 && MIN_FIELDS[head] === undefined) throw new TetherError('UNKNOWN_MESSAGE', `unknown message type ${head}`);
  try {
    return decodeFields(head, f, body);
  } catch (error) {
    const stream = streamField(head, f);
    if (stream === null || !(error instanceof TetherError)) throw error;
    throw new MalformedMessage(error.message, head, stream);
  }
}

/** The stream an output head names: head = -1 - (2 * stream + channel). */
const outputStream = (head: number): number => Math.floor((-1 - head) / 2);

/** The stream a message of type `head` names, if its stream field decodes, whatever its other fields hold. */
function streamField(head: number, f: unknown[]): number | null {
  if (head < 0) return outputStream(head);
  return STREAM_FIRST.has(head) && isUint(f[0]) ? f[0] : null;
}

/** The message of type `head` (known to this version) from its fields `f`. */
function decodeFields(head: number, f: unknown[], body: Buffer): Message {
  if (head < 0) {
    return { type: 'output', stream: outputStream(head), channel: ((-1 - head) % 2) as ChannelId, data: bytes(f[0], 'output data') };
  }
  const need = MIN_FIELDS[head];
  if (f.length < need) bad(`message type ${head} needs ${need} fields, has ${f.length}`);
  switch (head) {
    case MsgType.HELLO: return decodeHello(f, body);
    case MsgType.CHALLENGE:
      return {
        type: head,
        paramsBytes: bytes(f[0], 'challenge parameters'),
        params: decodeChallengeParams(bytes(f[0], 'challenge parameters')),
        proof: bytes(f[1], 'challenge proof', PROOF_BYTES),
      };
    case MsgType.PROOF: return { type: head, proof: bytes(f[0], 'proof', PROOF_BYTES) };
    case MsgType.WELCOME:
      return {
        type: head,
        session: bytes(f[0], 'session id', SESSION_ID_BYTES),
        resumed: f[1] === true,
        nextSeq: uint(f[2], 'welcome sequence'),
      };
    case MsgType.ACK:
    case MsgType.NAK: {
      const nextSeq = uint(f[0], 'acknowledged sequence');
      return f[1] === undefined ? { type: head, nextSeq } : { type: head, nextSeq, received: bytes(f[1], 'received frames') };
    }
    case MsgType.PING:
    case MsgType.PONG: return { type: head, token: uint(f[0], 'ping token') };
    case MsgType.ERROR: return { type: head, code: uint(f[0], 'error code'), message: text(f[1], 'error message') };
    case MsgType.INFO: return { type: head, info: map(f[0], 'worker info') };
    case MsgType.START:
      return { type: head, stream: uint(f[0], 'stream'), command: text(f[1], 'command'), args: map(f[2], 'arguments') };
    case MsgType.UPDATE: return { type: head, stream: uint(f[0], 'stream'), key: text(f[1], 'update key'), value: f[2] };
    case MsgType.COMPLETE: {
      const failure = f[1] === null || f[1] === undefined ? null : pair(f[1], 'failure');
      return {
        type: head,
        stream: uint(f[0], 'stream'),
        failure: failure && { code: uint(failure[0], 'failure code'), message: text(failure[1], 'failure message') },
      };
    }
    case MsgType.INTERRUPT: return { type: head, stream: uint(f[0], 'stream'), why: text(f[1], 'reason') };
    case MsgType.DATA: return { type: head, stream: uint(f[0], 'stream'), data: bytes(f[1], 'data') };
    case MsgType.EOF: {
      const times = f[1] === null || f[1] === undefined ? null : pair(f[1], 'file times');
      const num = (v: unknown) => (typeof v === 'number' ? v : bad('file times must be numbers'));
      return { type: head, stream: uint(f[0], 'stream'), times: times && { atime: num(times[0]), mtime: num(times[1]) } };
    }
    case MsgType.CREDIT: return { type: head, stream: uint(f[0], 'stream'), bytes: uint(f[1], 'credit') };
    case MsgType.LOG:
      return { type: head, stream: uint(f[0], 'stream'), name: text(f[1], 'log name'), data: bytes(f[2], 'log data') };
    case MsgType.HEADER: return { type: head, stream: uint(f[0], 'stream'), text: text(f[1], 'header') };
    case MsgType.PRINT: return { type: head, text: text(f[0], 'print text') };
    case MsgType.SHUTDOWN: return { type: head };
    case MsgType.REJECT:
      return {
        type: head,
        stream: f[0] === null ? null : uint(f[0], 'stream'),
        code: uint(f[1], 'reject code'),
        message: text(f[2], 'reject message'),
      };
    case MsgType.FRAGMENT:
      if (typeof f[0] !== 'boolean') bad('fragment flag must be a boolean');
      return { type: head, more: f[0], data: bytes(f[1], 'fragment data') };
    default:
      return {
        type: MsgType.STDIN,
        stream: uint(f[0], 'stream'),
        data: f[1] === null ? null : bytes(f[1], 'stdin data'),
      };
  }
}
