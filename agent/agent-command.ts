/**
 * The agent's end of a command running on a stream: the CommandIO the
 * command runs with, turned into protocol messages under flow control.
 */
import { CreditGate, CreditLedger, logNameBytes } from '../wire/credit';
import { TetherError } from '../wire/errors';
import { type ChannelId, Channel, type Message, MsgType, type OutgoingMessage } from '../wire/messages';
import type { Session } from '../wire/session';
import { InboundQueue, payloadChunks } from '../wire/stream-io';
import type { CommandIO, FileTimes } from './commands/command';
import { type ProcessGroupRecords, shortCommand } from './orphans';
import { type SpoolBudget, type Stored, StreamSpool } from './spool';


/**
 * Bytes the master pushes (download data, stdin) for the command to read:
 * they wait in the stream's InboundQueue, which its credit bounds and where
 * small chunks join, and their credit goes back as the command reads them.
 */
class InboundReader {
  private readonly queue: InboundQueue<null>;
  private waiter: ((chunk: Buffer | null) => void) | null = null;
  private ended = false;

  constructor(ledger: CreditLedger, grant: (bytes: number) => void) {
    this.queue = new InboundQueue(ledger, grant);
  }

  /** Bytes, or null: no more. */
  push(chunk: Buffer | null): void {
    if (this.ended) return;
    if (chunk === null) this.ended = true;
    else this.queue.payload('data', chunk);
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter(this.take());
    }
  }

  read(): Promise<Buffer | null> {
    if (this.queue.length > 0 || this.ended) return Promise.resolve(this.take());
    return new Promise((resolve) => (this.waiter = resolve));
  }

  private take(): Buffer | null {
    const next = this.queue.shift();
    if (!next || !('data' in next)) return null;
    this.queue.consumed(next);
    return next.data;
  }

  /** Ends the reader early (interrupt, lost link): a waiting read gets null. */
  abort(): void {
    this.ended = true;
    this.queue.clear();
    this.waiter?.(null);
    this.waiter = null;
  }
}

/** A message waiting to go out, in order; payload waits in the spool until credit allows. */
type Outgoing = { message: OutgoingMessage } | { stored: Stored; make: (data: Buffer) => OutgoingMessage };

export class AgentCommand implements CommandIO {
  private readonly controller = new AbortController();
  private readonly gate: CreditGate;
  private readonly download: InboundReader;
  private readonly stdinQueue: InboundReader;
  private readonly spool: StreamSpool;
  private readonly outbox: Outgoing[] = [];
  private pumping = false;
  /** No more output: the command completed, or was lost. */
  private ended = false;
  /** Lost: nothing more goes out on the stream. */
  private dropped = false;
  /** Payload bytes in the outbox, not yet handed to the session. */
  private unsentBytes = 0;
  /** Writes (stdout, file data ...) waiting for room: see mustWait(). */
  private writers: Array<() => void> = [];
  /** The process groups this command started, by pgid, with their command lines: what stop.ts KILLs if they outlive the interrupt. */
  readonly processGroupsStarted = new Map<number, string>();
  /** Settles once COMPLETE went to the session (or the stream was lost): the stream id is free then. */
  readonly finished: Promise<void>;
  private markFinished!: () => void;

  constructor(
    readonly stream: number,
    readonly basedir: string,
    private readonly session: Session,
    private readonly window: number,
    private readonly budget: SpoolBudget,
    private readonly processGroups: ProcessGroupRecords,
  ) {
    this.gate = new CreditGate(window);
    this.spool = new StreamSpool(budget);
    this.finished = new Promise((resolve) => (this.markFinished = resolve));
    const grant = (bytes: number) => this.enqueue({ message: { type: MsgType.CREDIT, stream, bytes } });
    const ledger = new CreditLedger(window, `stream ${stream}`);
    this.download = new InboundReader(ledger, grant);
    this.stdinQueue = new InboundReader(ledger, grant);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  private enqueue(item: Outgoing): void {
    if (this.ended) return;
    this.outbox.push(item);
    void this.pump();
  }

  /** Sends the outbox in order: payload once credit allows, the rest at once. */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.outbox.length > 0) {
        const item = this.outbox[0];
        if ('message' in item) {
          this.session.send(item.message);
        } else {
          const length = 'data' in item.stored ? item.stored.data.length : item.stored.length;
          await this.gate.take(length, this.window);
          // Lost while its credit came: it goes nowhere.
          if (this.dropped) throw new TetherError('UNKNOWN_STREAM', `stream ${this.stream} was lost`);
          this.session.send(item.make(this.spool.take(item.stored)));
          this.unsentBytes -= length;
        }
        this.outbox.shift();
        this.wakeWriters();
      }
    } catch {
      // The stream was lost: what is left will never be sent.
      this.discard();
    } finally {
      this.pumping = false;
    }
    if (this.ended && this.outbox.length === 0) {
      this.spool.dispose();
      this.markFinished();
    }
  }

  private discard(): void {
    for (const item of this.outbox.splice(0)) if (!('message' in item)) this.spool.take(item.stored);
    this.unsentBytes = 0;
    this.spool.dispose();
    this.wakeWriters();
    this.markFinished();
  }

  /**
   * A write waits while more than one window of this command's output is not
   * yet sent and the link is up: the master's pace then holds the command, as
   * a pipe would, and memory stays at a window or two. While the link is down
   * output goes to the spool (memory, then disk) and only a full disk budget
   * holds the command.
   */
  private mustWait(): boolean {
    if (this.ended) return false;
    return this.budget.full || (this.session.isAttached && this.unsentBytes > this.window);
  }

  private wakeWriters(): void {
    if (this.writers.length === 0 || this.mustWait()) return;
    for (const wake of this.writers.splice(0)) wake();
  }

  /** The link went down (the session may resume): waiting writes go on into the spool. */
  linkDown(): void {
    this.wakeWriters();
  }

  /** Queues `data` in frame-sized chunks; resolves once there is room for more (mustWait()). */
  private async sendPayload(data: Buffer, make: (chunk: Buffer) => OutgoingMessage, fieldBytes = 0): Promise<void> {
    if (this.session.isClosed) throw new TetherError('PEER_TIMEOUT', 'the connection to the master is gone');
    for (const chunk of payloadChunks(data, this.session.maxBody, this.window, fieldBytes)) {
      this.unsentBytes += chunk.length;
      this.enqueue({ stored: this.spool.store(chunk), make });
    }
    while (this.mustWait()) await new Promise<void>((resolve) => this.writers.push(resolve));
  }

  private output(channel: ChannelId, data: Buffer): Promise<void> {
    return this.sendPayload(data, (chunk) => ({ type: 'output', stream: this.stream, channel, data: chunk }));
  }

  update(key: string, value: unknown): void {
    this.enqueue({ message: { type: MsgType.UPDATE, stream: this.stream, key, value } });
  }

  header(text: string): void {
    this.enqueue({ message: { type: MsgType.HEADER, stream: this.stream, text } });
  }

  stdout(chunk: Buffer): Promise<void> {
    return this.output(Channel.STDOUT, chunk);
  }

  stderr(chunk: Buffer): Promise<void> {
    return this.output(Channel.STDERR, chunk);
  }

  log(name: string, chunk: Buffer): Promise<void> {
    return this.sendPayload(chunk, (data) => ({ type: MsgType.LOG, stream: this.stream, name, data }), logNameBytes(name));
  }

  writeFile(chunk: Buffer): Promise<void> {
    return this.sendPayload(chunk, (data) => ({ type: MsgType.DATA, stream: this.stream, data }));
  }

  async closeFile(times?: FileTimes): Promise<void> {
    this.enqueue({ message: { type: MsgType.EOF, stream: this.stream, times: times ?? null } });
  }

  readFile(): Promise<Buffer | null> {
    return this.download.read();
  }

  readStdin(): Promise<Buffer | null> {
    return this.stdinQueue.read();
  }

  recordProcessGroup(pid: number, command: string): () => void {
    this.processGroupsStarted.set(pid, shortCommand(command));
    return this.processGroups.record(pid, command);
  }

  /** A message from the master for this stream. */
  onMessage(m: Message): void {
    switch (m.type) {
      case MsgType.CREDIT:
        this.gate.grant(m.bytes);
        return;
      case MsgType.DATA:
        this.download.push(m.data);
        return;
      case MsgType.EOF:
        this.download.push(null);
        return;
      case MsgType.STDIN:
        this.stdinQueue.push(m.data);
        return;
      case MsgType.INTERRUPT:
        this.interrupt(m.why);
        return;
      default:
        throw new TetherError('BAD_MESSAGE', `message ${String(m.type)} is not for a command stream`);
    }
  }

  interrupt(why: string): void {
    if (!this.controller.signal.aborted) this.controller.abort(why);
  }

  /**
   * The master has lost the command (the session is gone for good, or a
   * REJECT ended it): stop it, drop what waits for the master, and send
   * nothing more on the stream, COMPLETE included.
   */
  lost(error: Error): void {
    this.interrupt(error.message);
    this.ended = true;
    this.dropped = true;
    this.gate.fail(error);
    if (!this.pumping) this.discard();
    this.download.abort();
    this.stdinQueue.abort();
  }

  /** The command finished: COMPLETE goes out after everything it sent. */
  complete(failure: { code: number; message: string } | null): void {
    if (this.ended) return;
    this.outbox.push({ message: { type: MsgType.COMPLETE, stream: this.stream, failure } });
    this.ended = true;
    void this.pump();
  }
}
