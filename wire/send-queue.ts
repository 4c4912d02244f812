/**
 * Messages waiting for the link, in order, as frame bodies. Output for the
 * same stream and channel that waits behind a busy link merges into one
 * frame (a slow line then carries fewer, fuller frames); a message larger
 * than a frame is cut into FRAGMENTs. The queue counts its bytes so the
 * session can bound it.
 */
import { TetherError } from './errors';
import { MAX_MESSAGE_BYTES, fragmentBodies } from './fragments';
import { PAYLOAD_HEAD_BYTES, type OutgoingMessage, encodeMessage } from './messages';

type Output = Extract<OutgoingMessage, { type: 'output' }>;

type Queued = { body: Buffer } | { output: Output; parts: Buffer[]; length: number };

export class SendQueue {
  private readonly items: Queued[] = [];
  /** Bytes waiting: bodies, and output payload. */
  bytes = 0;

  constructor(private readonly maxBody: number) {}

  get length(): number {
    return this.items.length;
  }

  /** Queues a message. Throws FRAME_TOO_LARGE for output that cannot fit a frame or a message over the limit. */
  push(message: OutgoingMessage): void {
    if (message.type === 'output') {
      const size = message.data.length;
      if (size + PAYLOAD_HEAD_BYTES > this.maxBody) throw tooLarge(size + PAYLOAD_HEAD_BYTES, this.maxBody);
      const last = this.items[this.items.length - 1];
      if (
        last && 'output' in last && last.output.stream === message.stream && last.output.channel === message.channel &&
        last.length + size + PAYLOAD_HEAD_BYTES <= this.maxBody
      ) {
        last.parts.push(message.data);
        last.length += size;
      } else {
        this.items.push({ output: message, parts: [message.data], length: size });
      }
      this.bytes += size;
      return;
    }
    const body = encodeMessage(message);
    if (body.length > MAX_MESSAGE_BYTES) throw tooLarge(body.length, MAX_MESSAGE_BYTES);
    const bodies = body.length <= this.maxBody ? [body] : fragmentBodies(body, this.maxBody);
    for (const piece of bodies) {
      this.items.push({ body: piece });
      this.bytes += piece.length;
    }
  }

  /** The next body to send, or undefined. */
  shift(): Buffer | undefined {
    const item = this.items.shift();
    if (!item) return undefined;
    if ('body' in item) {
      this.bytes -= item.body.length;
      return item.body;
    }
    this.bytes -= item.length;
    const data = item.parts.length === 1 ? item.parts[0] : Buffer.concat(item.parts, item.length);
    return encodeMessage({ ...item.output, data });
  }
}

function tooLarge(size: number, limit: number): TetherError {
  return new TetherError('FRAME_TOO_LARGE', `a ${size}-byte message exceeds the ${limit}-byte limit`);
}
