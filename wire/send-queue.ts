/**
 * Messages waiting for the link, in order; frame bodies are cut from them
 * when the link takes one, at the size it asks for then (frame-size.ts: it
 * shrinks on a noisy line). Payload (output, DATA, LOG, STDIN) for the same
 * place that waits behind a busy link joins into one message, so a slow line
 * carries fewer, fuller frames; a body larger than the frame is cut into
 * pieces of payload, or, for any other message, into FRAGMENTs. A payload
 * body leaves as parts (its head, then the data as queued), never copied.
 * With deflate, payload joins up to the inflated limit and a body is looked
 * at (peek) before it is taken, so the session can fill a frame with
 * compressed bytes. The queue counts its bytes so the session can bound it.
 */
import type { BodyParts } from './body-parts';
import { TetherError } from './errors';
import { FRAGMENT_HEAD_BYTES, MAX_MESSAGE_BYTES } from './fragments';
import { logNameBytes } from './credit';
import { MsgType, type OutgoingMessage, PAYLOAD_HEAD_BYTES, encodeMessage, payloadHead } from './messages';

/** A message whose payload may be cut or joined (its credit counts bytes, not messages). */
type Payload = Extract<OutgoingMessage, { type: 'output' } | { type: typeof MsgType.DATA } | { type: typeof MsgType.LOG }>
  | (Extract<OutgoingMessage, { type: typeof MsgType.STDIN }> & { data: Buffer });

type Queued =
  /** An encoded message, and how much of it went out already (in FRAGMENTs). */
  | { body: Buffer; sent: number }
  /** Payload pieces waiting to go: a body takes them as they are (parts). */
  | { payload: Payload; parts: Buffer[]; length: number };

function isPayload(m: OutgoingMessage): m is Payload {
  return m.type === 'output' || m.type === MsgType.DATA || m.type === MsgType.LOG || (m.type === MsgType.STDIN && m.data !== null);
}

/** Whether payload `b` may join `a`: the same message type, stream, channel or log name. */
function samePlace(a: Payload, b: Payload): boolean {
  if (a.type !== b.type || a.stream !== b.stream) return false;
  if (a.type === 'output') return a.channel === (b as typeof a).channel;
  if (a.type === MsgType.LOG) return a.name === (b as typeof a).name;
  return true;
}

/** Room in a body for a payload message's other fields: the rule credit.ts's payloadLimit() chunks by. */
function headBytes(m: Payload): number {
  return PAYLOAD_HEAD_BYTES + (m.type === MsgType.LOG ? logNameBytes(m.name) : 0);
}

export class SendQueue {
  private readonly items: Queued[] = [];
  /** Bytes waiting: bodies, and payload. */
  bytes = 0;

  /**
   * `maxBody`: the most one message may take (max_frame). `joinLimit`: the
   * most waiting payload joins to, more than `maxBody` only when bodies are
   * compressed (compression.ts, inflatedLimit()).
   */
  constructor(private readonly maxBody: number, private readonly joinLimit = maxBody) {}

  get length(): number {
    return this.items.length;
  }

  /**
   * The most plain bytes the next body may hold when deflate fills a frame of
   * `limit`: payload up to the join limit; any other message keeps to `limit`
   * (and to FRAGMENTs beyond it).
   */
  reach(limit: number): number {
    return this.items.length > 0 && 'payload' in this.items[0] ? Math.max(limit, this.joinLimit) : limit;
  }

  /** Queues a message. Throws FRAME_TOO_LARGE for payload that cannot fit a frame, or a message over the limit. */
  push(message: OutgoingMessage): void {
    if (isPayload(message)) {
      const size = message.data.length;
      const head = headBytes(message);
      if (size + head > this.maxBody) throw tooLarge(size + head, this.maxBody);
      const last = this.items[this.items.length - 1];
      if (last && 'payload' in last && samePlace(last.payload, message) && last.length + size + head <= this.joinLimit) {
        last.parts.push(message.data);
        last.length += size;
      } else {
        this.items.push({ payload: message, parts: [message.data], length: size });
      }
      this.bytes += size;
      return;
    }
    const body = encodeMessage(message);
    if (body.length > MAX_MESSAGE_BYTES) throw tooLarge(body.length, MAX_MESSAGE_BYTES);
    this.items.push({ body, sent: 0 });
    this.bytes += body.length;
  }

  /** The next frame body, at most `limit` bytes (a payload message's head may take it a little over), or undefined. */
  shift(limit = this.maxBody): BodyParts | undefined {
    const item = this.items[0];
    if (!item) return undefined;
    const next = cut(item, limit);
    this.bytes -= next.taken;
    if ('body' in item) item.sent += next.taken;
    else {
      item.parts = next.rest;
      item.length -= next.taken;
    }
    if (next.last) this.items.shift();
    return next.body;
  }

  /** The body shift(limit) would give, left in the queue. */
  peek(limit = this.maxBody): BodyParts | undefined {
    const item = this.items[0];
    return item ? cut(item, limit).body : undefined;
  }
}

/**
 * The next body of `item` at `limit` bytes, without changing it: a whole
 * message when it fits, else its next FRAGMENT piece; for payload, its head
 * and the first bytes that fit, as the queued buffers (or pieces of them).
 * `taken`: the queued bytes it holds; `rest`: the payload left after it.
 */
function cut(item: Queued, limit: number): { body: BodyParts; taken: number; rest: Buffer[]; last: boolean } {
  if ('body' in item) {
    if (item.sent === 0 && item.body.length <= limit) return { body: [item.body], taken: item.body.length, rest: [], last: true };
    const piece = item.body.subarray(item.sent, item.sent + Math.max(1, limit - FRAGMENT_HEAD_BYTES));
    const more = item.sent + piece.length < item.body.length;
    return { body: [encodeMessage({ type: MsgType.FRAGMENT, more, data: piece })], taken: piece.length, rest: [], last: !more };
  }
  const room = Math.max(1, Math.min(item.length, limit - headBytes(item.payload)));
  const data: Buffer[] = [];
  let i = 0;
  let left = room;
  for (; left > 0 && item.parts[i].length <= left; i++) {
    data.push(item.parts[i]);
    left -= item.parts[i].length;
  }
  const rest = item.parts.slice(i);
  if (left > 0) {
    data.push(rest[0].subarray(0, left));
    rest[0] = rest[0].subarray(left);
  }
  return { body: [payloadHead(item.payload, room), ...data], taken: room, rest, last: room === item.length };
}

function tooLarge(size: number, limit: number): TetherError {
  return new TetherError('FRAME_TOO_LARGE', `a ${size}-byte message exceeds the ${limit}-byte limit`);
}
