/**
 * Credit-based flow control for one direction of one command stream. The
 * sender spends credit for every payload byte (output, log, file data, stdin)
 * and waits when it has none; the receiver returns credit as its consumer
 * takes the bytes. Neither side can be made to buffer more than one window.
 */
import { TetherError } from './errors';
import { PAYLOAD_HEAD_BYTES } from './messages';

/** Room a LOG's name takes in its body (text head and bytes). */
export function logNameBytes(name: string): number {
  return Buffer.byteLength(name) + 9;
}

/**
 * Payload bytes per frame: the frame limit less room for the message head
 * and for `fieldBytes` of other fields such as a log's name, and never above
 * one window.
 */
export function payloadLimit(maxBody: number, window: number, fieldBytes = 0): number {
  return Math.max(1, Math.min(maxBody - PAYLOAD_HEAD_BYTES - fieldBytes, window));
}

/** Sender side: awaits credit before each send. */
export class CreditGate {
  private waiters: Array<{ need: number; resolve: () => void; reject: (e: Error) => void }> = [];
  private failed: Error | null = null;

  constructor(private available: number) {}

  get credit(): number {
    return this.available;
  }

  /**
   * Takes `bytes` of credit, waiting until it is there. A chunk larger than the
   * window only needs the whole window free, so it cannot wait forever.
   */
  take(bytes: number, window: number): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const need = Math.min(bytes, window);
    if (this.waiters.length === 0 && this.available >= need) {
      this.available -= bytes;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this.waiters.push({
        need,
        resolve: () => {
          this.available -= bytes;
          resolve();
        },
        reject,
      });
    });
  }

  grant(bytes: number): void {
    this.available += bytes;
    while (this.waiters.length > 0 && this.available >= this.waiters[0].need) this.waiters.shift()!.resolve();
  }

  /** Fails every waiter (the stream or the session ended). */
  fail(error: Error): void {
    this.failed = error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }
}

/**
 * What a receiver holds for its consumer, per stream and direction, besides
 * payload (which credit bounds): the other fields of the messages waiting
 * (HEADER text, UPDATE key and value, LOG name) plus MESSAGE_COST for each.
 * Room for 16 384 waiting messages: payload for one consumer call joins into
 * one (wire/byte-run.ts), so only output that alternates between stdout and
 * stderr in pieces of under 16 bytes for a whole window (of the default
 * 256 KiB) could fill it.
 */
export const MAX_HELD_OTHER = 4 * 1024 * 1024;
/** What one waiting message counts: about what the master's queue spends on one (measured 240-260 bytes). */
export const MESSAGE_COST = 256;

/**
 * Receiver side: counts what arrived against the window and against
 * MAX_HELD_OTHER until the consumer takes it, and says when to return credit.
 */
export class CreditLedger {
  private outstanding: number;
  private consumed = 0;
  private heldPayload = 0;
  private heldOther = 0;

  /** `what` names the stream in errors. */
  constructor(
    private readonly window: number,
    private readonly what = 'a stream',
  ) {
    this.outstanding = window;
  }

  /** Bytes received and not yet taken by the consumer. */
  get held(): number {
    return this.heldPayload + this.heldOther;
  }

  /**
   * Records `payload` bytes and `other` bytes (fields, MESSAGE_COST) that
   * arrived. Throws FLOW_CONTROL, keeping nothing, if the sender overran its
   * credit (by more than one window) or MAX_HELD_OTHER.
   */
  received(payload: number, other = 0): void {
    if (this.outstanding - payload < -this.window) {
      throw new TetherError('FLOW_CONTROL', `${this.what}: the peer sent more than its flow-control credit (over ${2 * this.window} bytes not yet returned)`);
    }
    if (this.heldOther + other > MAX_HELD_OTHER) {
      throw new TetherError(
        'FLOW_CONTROL',
        `${this.what}: more than ${MAX_HELD_OTHER} bytes of messages wait for the consumer (each counts ${MESSAGE_COST} bytes and its HEADER text, UPDATE key and value, or LOG name)`,
      );
    }
    this.outstanding -= payload;
    this.heldPayload += payload;
    this.heldOther += other;
  }

  /** Records what the consumer has taken; returns credit to grant now, or 0 to wait for more. */
  consumedBytes(payload: number, other = 0): number {
    this.heldPayload -= payload;
    this.heldOther -= other;
    this.consumed += payload;
    if (this.consumed < this.window / 4) return 0;
    const grant = this.consumed;
    this.consumed = 0;
    this.outstanding += grant;
    return grant;
  }
}
