/**
 * Reads a Tether link as it passes through a relay: splits both directions
 * into frames, decodes each message and adds up the wire bytes by message
 * type and the payload they carry. It also estimates what the same messages
 * would take with the deflate capability (which the hub negotiates only on
 * lossy links, not on TCP): every sequenced body through wire/compression.ts's
 * Compressor, in order, then framed.
 */
import { Compressor } from '../wire/compression';
import { cobsEncodeInto, cobsMaxEncodedLength } from '../wire/cobs';
import { FrameReader, TRAILER_BYTES, authenticatedParts, handshakeBody, isSequencedBody } from '../wire/framing';
import { type Message, MsgType, decodeMessage } from '../wire/messages';

const TYPE_NAMES = new Map<unknown, string>(Object.entries(MsgType).map(([name, n]) => [n, name]));

export interface TypeBytes {
  frames: number;
  /** Bytes on the wire: COBS-encoded body and trailer (CRC, or number, tag and CRC), and the delimiter. */
  bytes: number;
  /** Payload carried (command output, file data, log data, stdin). */
  payload: number;
}

export interface WireSummary {
  total: number;
  payload: number;
  /** total − payload */
  overhead: number;
  byType: Record<string, TypeBytes>;
  /** The same frames with every sequenced body deflated as `tether-master --compress always` does on TCP. */
  withDeflate: number;
}

function encodedLength(frame: Uint8Array): number {
  const scratch = Buffer.allocUnsafe(cobsMaxEncodedLength(frame.length));
  return cobsEncodeInto(frame, scratch, 0) + 1;
}

function payloadOf(m: Message): number {
  switch (m.type) {
    case 'output':
    case MsgType.DATA:
    case MsgType.LOG:
      return m.data.length;
    case MsgType.STDIN:
      return m.data?.length ?? 0;
    default:
      return 0;
  }
}

class Direction {
  readonly byType = new Map<string, TypeBytes>();
  withDeflate = 0;
  private readonly reader = new FrameReader(1 << 20);
  // Level 1, the level a session uses on TCP (wire/session.ts).
  private readonly compressor = new Compressor(1);

  constructor() {
    this.reader.on('frame', (frame: Buffer) => this.onFrame(frame));
  }

  feed(chunk: Buffer): void {
    this.reader.feed(chunk);
  }

  private onFrame(frame: Buffer): void {
    const wire = encodedLength(frame);
    // Each kind's CRC begins differently (framing.ts), so at most one of the two reads a frame.
    const body = authenticatedParts(frame)?.body ?? handshakeBody(frame);
    if (!body) {
      this.count('damaged (CRC)', wire, 0);
      this.withDeflate += wire;
      return;
    }
    let type = body[0] === 0xff ? 'compressed (deflate)' : 'undecodable';
    let payload = 0;
    try {
      const m = decodeMessage(body);
      type = m.type === 'output' ? 'output (stdout/stderr)' : (TYPE_NAMES.get(m.type) ?? String(m.type));
      payload = payloadOf(m);
    } catch {
      // a compressed body or one this version does not know
    }
    this.count(type, wire, payload);
    if (body.length > 0 && isSequencedBody(body)) {
      const packed = this.compressor.pack(Buffer.from(body));
      this.withDeflate += encodedLength(Buffer.concat([packed, Buffer.alloc(TRAILER_BYTES, 1)]));
    } else {
      this.withDeflate += wire;
    }
  }

  private count(type: string, wire: number, payload: number): void {
    const entry = this.byType.get(type) ?? { frames: 0, bytes: 0, payload: 0 };
    entry.frames++;
    entry.bytes += wire;
    entry.payload += payload;
    this.byType.set(type, entry);
  }
}

export class TetherWireTap {
  private up = new Direction();
  private down = new Direction();

  /** Bytes that went from the agent (up) or to it (down). */
  feed(direction: 'up' | 'down', chunk: Buffer): void {
    (direction === 'up' ? this.up : this.down).feed(chunk);
  }

  /** Starts counting afresh; frames keep their place, so call it between builds. */
  reset(): void {
    for (const d of [this.up, this.down]) {
      d.byType.clear();
      d.withDeflate = 0;
    }
  }

  summary(): WireSummary {
    const byType: Record<string, TypeBytes> = {};
    let total = 0;
    let payload = 0;
    for (const d of [this.up, this.down]) {
      for (const [type, t] of d.byType) {
        const e = (byType[type] ??= { frames: 0, bytes: 0, payload: 0 });
        e.frames += t.frames;
        e.bytes += t.bytes;
        e.payload += t.payload;
        total += t.bytes;
        payload += t.payload;
      }
    }
    const sorted = Object.fromEntries(Object.entries(byType).sort((a, b) => b[1].bytes - a[1].bytes));
    return { total, payload, overhead: total - payload, byType: sorted, withDeflate: this.up.withDeflate + this.down.withDeflate };
  }
}
