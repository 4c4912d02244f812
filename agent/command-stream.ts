/**
 * The agent's side of one command stream: the CommandIO a command runs with,
 * turned into protocol messages under flow control.
 */
import { CreditGate, CreditLedger, payloadLimit } from '../wire/credit';
import { TetherError } from '../wire/errors';
import { type ChannelId, Channel, type Message, MsgType, type OutgoingMessage } from '../wire/messages';
import type { Session } from '../wire/session';
import type { CommandIO, FileTimes } from './commands/command';


/** Bytes the master pushes (download data, stdin): queued up to one window, credit returned as read. */
class InboundQueue {
  private chunks: Array<Buffer | null> = [];
  private waiter: ((chunk: Buffer | null) => void) | null = null;
  private readonly ledger: CreditLedger;
  private ended = false;

  constructor(window: number, private readonly grant: (bytes: number) => void) {
    this.ledger = new CreditLedger(window);
  }

  push(chunk: Buffer | null): void {
    if (this.ended) return;
    if (chunk) this.ledger.received(chunk.length);
    else this.ended = true;
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      this.taken(chunk);
      waiter(chunk);
    } else {
      this.chunks.push(chunk);
    }
  }

  read(): Promise<Buffer | null> {
    if (this.chunks.length > 0) {
      const chunk = this.chunks.shift()!;
      this.taken(chunk);
      return Promise.resolve(chunk);
    }
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** Ends the queue early (interrupt, lost link): a waiting reader gets null. */
  abort(): void {
    this.ended = true;
    this.chunks = [];
    this.waiter?.(null);
    this.waiter = null;
  }

  private taken(chunk: Buffer | null): void {
    if (!chunk) return;
    const grant = this.ledger.consumedBytes(chunk.length);
    if (grant > 0) this.grant(grant);
  }
}

export class CommandStream implements CommandIO {
  private readonly controller = new AbortController();
  private readonly gate: CreditGate;
  private readonly download: InboundQueue;
  private readonly stdinQueue: InboundQueue;

  constructor(
    readonly stream: number,
    readonly basedir: string,
    private readonly session: Session,
    private readonly window: number,
  ) {
    this.gate = new CreditGate(window);
    const grant = (bytes: number) => this.send({ type: MsgType.CREDIT, stream, bytes });
    this.download = new InboundQueue(window, grant);
    this.stdinQueue = new InboundQueue(window, grant);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  private send(m: OutgoingMessage): void {
    if (this.session.isClosed) throw new TetherError('PEER_TIMEOUT', 'the connection to the master is gone');
    this.session.send(m);
  }

  /** Sends `data` in frame-sized chunks, each once credit allows; `fieldBytes` is room for other fields. */
  private async sendPayload(data: Buffer, make: (chunk: Buffer) => OutgoingMessage, fieldBytes = 0): Promise<void> {
    const limit = payloadLimit(this.session.maxBody, this.window, fieldBytes);
    for (let at = 0; at < data.length; at += limit) {
      const chunk = data.subarray(at, at + limit);
      await this.gate.take(chunk.length, this.window);
      this.send(make(chunk));
    }
  }

  private output(channel: ChannelId, data: Buffer): Promise<void> {
    return this.sendPayload(data, (chunk) => ({ type: 'output', stream: this.stream, channel, data: chunk }));
  }

  update(key: string, value: unknown): void {
    this.send({ type: MsgType.UPDATE, stream: this.stream, key, value });
  }

  header(text: string): void {
    this.send({ type: MsgType.HEADER, stream: this.stream, text });
  }

  stdout(chunk: Buffer): Promise<void> {
    return this.output(Channel.STDOUT, chunk);
  }

  stderr(chunk: Buffer): Promise<void> {
    return this.output(Channel.STDERR, chunk);
  }

  log(name: string, chunk: Buffer): Promise<void> {
    const nameBytes = Buffer.byteLength(name) + 9;
    return this.sendPayload(chunk, (data) => ({ type: MsgType.LOG, stream: this.stream, name, data }), nameBytes);
  }

  writeFile(chunk: Buffer): Promise<void> {
    return this.sendPayload(chunk, (data) => ({ type: MsgType.DATA, stream: this.stream, data }));
  }

  async closeFile(times?: FileTimes): Promise<void> {
    this.send({ type: MsgType.EOF, stream: this.stream, times: times ?? null });
  }

  readFile(): Promise<Buffer | null> {
    return this.download.read();
  }

  readStdin(): Promise<Buffer | null> {
    return this.stdinQueue.read();
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

  /** The link is gone: stop the command and release anything waiting on the master. */
  lost(error: Error): void {
    this.interrupt(error.message);
    this.gate.fail(error);
    this.download.abort();
    this.stdinQueue.abort();
  }

  complete(failure: { code: number; message: string } | null): void {
    this.gate.fail(new TetherError('UNKNOWN_STREAM', `stream ${this.stream} has completed`));
    if (!this.session.isClosed) this.session.send({ type: MsgType.COMPLETE, stream: this.stream, failure });
  }
}
