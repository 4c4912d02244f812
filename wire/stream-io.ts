/**
 * Payload on a stream, the same on both sides and in both directions
 * (PROTOCOL.md 8.2):
 *
 *   payloadChunks()  cuts what a side sends into frame-sized chunks; the
 *                    sender takes credit for each before it goes
 *   InboundQueue     what arrived and waits for its consumer, in order,
 *                    under the stream's CreditLedger: payload for the same
 *                    consumer joins (byte-run.ts), and its credit goes back
 *                    as the consumer takes it, not as it arrives
 */
import { ByteRun } from './byte-run';
import { type CreditLedger, MESSAGE_COST, payloadLimit } from './credit';

/** `data` in chunks that fit a frame of `maxBody` (with `fieldBytes` of other fields) and never exceed one window. */
export function* payloadChunks(data: Buffer, maxBody: number, window: number, fieldBytes = 0): Generator<Buffer> {
  const limit = payloadLimit(maxBody, window, fieldBytes);
  for (let at = 0; at < data.length; at += limit) yield data.subarray(at, at + limit);
}

/** A waiting event: payload for one consumer (`key`), or another message. */
export type Inbound<T> = { key: string; data: Buffer; other: number } | { item: T; other: number };

type Waiting<T> = { key: string; run: ByteRun; other: number } | { item: T; other: number };

export class InboundQueue<T> {
  private readonly waiting: Array<Waiting<T>> = [];

  /** `ledger` is the stream's (several queues of one stream share it: credit is per stream and direction). */
  constructor(
    private readonly ledger: CreditLedger,
    private readonly grant: (bytes: number) => void,
  ) {}

  get length(): number {
    return this.waiting.length;
  }

  /**
   * Payload for the consumer `key`, with `fieldBytes` of other fields (a log's
   * name). Throws FLOW_CONTROL past the stream's bounds, keeping nothing.
   */
  payload(key: string, data: Buffer, fieldBytes = 0): void {
    if (data.length === 0) return;
    const last = this.waiting.at(-1);
    if (last && 'run' in last && last.key === key && last.run.canJoin(data)) {
      this.ledger.received(data.length);
      last.run.append(data);
      return;
    }
    const other = fieldBytes + MESSAGE_COST;
    this.ledger.received(data.length, other);
    this.waiting.push({ key, run: new ByteRun(data), other });
  }

  /** Another message, with `fieldBytes` of fields. Throws FLOW_CONTROL past the stream's bounds. */
  other(item: T, fieldBytes: number): void {
    const other = fieldBytes + MESSAGE_COST;
    this.ledger.received(0, other);
    this.waiting.push({ item, other });
  }

  /** The next event for the consumer; give it to consumed() once the consumer has taken it. */
  shift(): Inbound<T> | undefined {
    const next = this.waiting.shift();
    if (!next) return undefined;
    return 'run' in next ? { key: next.key, data: next.run.bytes(), other: next.other } : next;
  }

  /** The consumer has taken `event`: its credit goes back (in batches, CreditLedger). */
  consumed(event: Inbound<T>): void {
    const grant = this.ledger.consumedBytes('data' in event ? event.data.length : 0, event.other);
    if (grant > 0) this.grant(grant);
  }

  /** Drops what waits (the consumer is gone); its credit no longer matters. */
  clear(): void {
    this.waiting.length = 0;
  }
}
