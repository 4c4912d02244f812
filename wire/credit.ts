/**
 * Credit-based flow control for one direction of one command stream. The
 * sender spends credit for every payload byte (output, log, file data, stdin)
 * and waits when it has none; the receiver returns credit as its consumer
 * takes the bytes. Neither side can be made to buffer more than one window.
 */
import { TetherError } from './errors';
import { PAYLOAD_HEAD_BYTES } from './messages';

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

/** Receiver side: counts bytes received against the window and says when to return credit. */
export class CreditLedger {
  private outstanding: number;
  private consumed = 0;

  constructor(private readonly window: number) {
    this.outstanding = window;
  }

  /** Records bytes that arrived. Throws FLOW_CONTROL if the sender overran its credit. */
  received(bytes: number): void {
    this.outstanding -= bytes;
    if (this.outstanding < -this.window) {
      throw new TetherError('FLOW_CONTROL', 'the peer sent more than its flow-control credit');
    }
  }

  /** Records bytes the consumer has taken; returns credit to grant now, or 0 to wait for more. */
  consumedBytes(bytes: number): number {
    this.consumed += bytes;
    if (this.consumed < this.window / 4) return 0;
    const grant = this.consumed;
    this.consumed = 0;
    this.outstanding += grant;
    return grant;
  }
}
