/**
 * The master's side of one authenticated agent: command streams over a
 * session, each with its own flow control in both directions.
 */
import { EventEmitter } from 'node:events';
import { encodeItem } from '../wire/cbor';
import { CreditGate, CreditLedger } from '../wire/credit';
import { TetherError, describeError, errorName } from '../wire/errors';
import { type Message, type MessageOf, MsgType } from '../wire/messages';
import { printable } from '../wire/printable';
import type { Session } from '../wire/session';
import { MAX_STREAM_ID } from '../wire/stream-ids';
import { type Inbound, InboundQueue, payloadChunks } from '../wire/stream-io';
import type { CommandResult, CommandSink, FileTimes, RemoteAgent, RemoteCommand, WorkerInfo } from './remote';

/** What an agent sends on a stream; anything else with a stream id is not for the master. */
const FROM_AGENT: ReadonlySet<Message['type']> = new Set([
  'output', MsgType.LOG, MsgType.DATA, MsgType.EOF, MsgType.HEADER, MsgType.UPDATE, MsgType.CREDIT, MsgType.COMPLETE,
]);

/** A command's failure as the agent reported it; its text reaches people, so it is escaped. */
function failureOf(code: number, message: string): NonNullable<CommandResult['failure']> {
  return { code: errorName(code) ?? String(code), message: printable(message) };
}

/** Ignored REJECTs logged per connection; a peer that sends more cannot flood the log. */
const LOGGED_REJECTS = 10;

/** Messages without payload that go to the sink. */
type SinkMessage = MessageOf<typeof MsgType.HEADER> | MessageOf<typeof MsgType.UPDATE> | MessageOf<typeof MsgType.EOF>;

/** The sink call a payload's key names: stdout, stderr, fileData, or log:NAME. */
const LOG_KEY = 'log:';

/** The master's end of a command running on the agent: what RemoteAgent.run returns. */
class MasterCommand implements RemoteCommand {
  readonly result: Promise<CommandResult>;
  private settle!: (r: CommandResult) => void;
  private fail!: (e: Error) => void;
  /** Events not yet handed to the sink; the one being delivered is already out. */
  private readonly pending: InboundQueue<SinkMessage>;
  private delivering = false;
  private sinkError: Error | null = null;
  /** How the command ended; the result settles once every event is delivered. */
  private ending: { failure: CommandResult['failure'] } | { error: Error } | null = null;
  private readonly ledger: CreditLedger;
  readonly gate: CreditGate;

  constructor(
    readonly stream: number,
    private readonly conn: AgentConnection,
    private readonly sink: CommandSink,
  ) {
    this.ledger = new CreditLedger(conn.window, `stream ${stream}`);
    this.pending = new InboundQueue(this.ledger, (bytes) => this.conn.sendIfOpen({ type: MsgType.CREDIT, stream, bytes }));
    this.gate = new CreditGate(conn.window);
    this.result = new Promise((resolve, reject) => {
      this.settle = resolve;
      this.fail = reject;
    });
    this.result.catch(() => undefined);
  }

  /** Bytes received for this command that its sink has not taken yet (see CreditLedger). */
  get undeliveredBytes(): number {
    return this.ledger.held;
  }

  /** Starts handing waiting events to the sink, after the session's message event, never inside it. */
  private kick(): void {
    if (this.delivering || this.sinkError) return;
    this.delivering = true;
    queueMicrotask(() => void this.deliver());
  }

  private async deliver(): Promise<void> {
    for (let next = this.pending.shift(); next && !this.sinkError; next = this.pending.shift()) {
      try {
        await this.call(next);
      } catch (error) {
        this.sinkError = error as Error;
        this.pending.clear();
        this.conn.abort(new TetherError('INTERNAL', `sink failed: ${(error as Error).message}`));
      }
      this.pending.consumed(next);
    }
    this.delivering = false;
    this.settleIfDone();
  }

  private call(event: Inbound<SinkMessage>): void | Promise<void> {
    const sink = this.sink;
    if ('data' in event) {
      const { key, data } = event;
      if (key.startsWith(LOG_KEY)) return sink.log?.(key.slice(LOG_KEY.length), data);
      return sink[key as 'stdout' | 'stderr' | 'fileData']?.(data);
    }
    const m = event.item;
    if (m.type === MsgType.HEADER) return sink.header?.(m.text);
    if (m.type === MsgType.UPDATE) return sink.update?.(m.key, m.value);
    return sink.fileClose?.(m.times ?? undefined);
  }

  private settleIfDone(): void {
    if (!this.ending || this.delivering) return;
    if (this.sinkError) this.fail(this.sinkError);
    else if ('error' in this.ending) this.fail(this.ending.error);
    else this.settle({ failure: this.ending.failure });
  }

  complete(failure: CommandResult['failure']): void {
    if (this.ending) return;
    this.ending = { failure };
    this.gate.fail(new TetherError('UNKNOWN_STREAM', `stream ${this.stream} has completed`));
    this.settleIfDone();
  }

  lost(error: Error): void {
    if (this.ending) return;
    this.ending = { error };
    this.gate.fail(error);
    this.settleIfDone();
  }

  private async sendPayload(make: (chunk: Buffer) => Parameters<Session['send']>[0], data: Buffer): Promise<void> {
    for (const chunk of payloadChunks(data, this.conn.session.maxBody, this.conn.window)) {
      await this.gate.take(chunk.length, this.conn.window);
      this.conn.send(make(chunk));
    }
  }

  writeFile(chunk: Buffer): Promise<void> {
    return this.sendPayload((data) => ({ type: MsgType.DATA, stream: this.stream, data }), chunk);
  }

  async endFile(): Promise<void> {
    this.conn.send({ type: MsgType.EOF, stream: this.stream, times: null });
  }

  async writeStdin(chunk: Buffer | null): Promise<void> {
    if (chunk === null) {
      this.conn.send({ type: MsgType.STDIN, stream: this.stream, data: null });
      return;
    }
    await this.sendPayload((data) => ({ type: MsgType.STDIN, stream: this.stream, data }), chunk);
  }

  interrupt(why: string): void {
    this.conn.sendIfOpen({ type: MsgType.INTERRUPT, stream: this.stream, why });
  }

  /** A message from the agent for this command; throws FLOW_CONTROL past the stream's bounds. */
  onMessage(m: Message): void {
    if (this.sinkError) return;
    switch (m.type) {
      case 'output':
        this.pending.payload(m.channel === 0 ? 'stdout' : 'stderr', m.data);
        break;
      case MsgType.LOG:
        this.pending.payload(LOG_KEY + m.name, m.data, Buffer.byteLength(m.name));
        break;
      case MsgType.DATA:
        this.pending.payload('fileData', m.data);
        break;
      case MsgType.EOF:
        this.pending.other(m, 0);
        break;
      case MsgType.HEADER:
        this.pending.other(m, Buffer.byteLength(m.text));
        break;
      case MsgType.UPDATE:
        this.pending.other(m, Buffer.byteLength(m.key) + encodeItem(m.value).length);
        break;
      case MsgType.CREDIT:
        this.gate.grant(m.bytes);
        return;
      case MsgType.COMPLETE:
        this.complete(m.failure && failureOf(m.failure.code, m.failure.message));
        return;
      default:
        throw new TetherError('BAD_MESSAGE', `message ${String(m.type)} is not for the master`);
    }
    this.kick();
  }
}

export type { FileTimes };

export class AgentConnection extends EventEmitter implements RemoteAgent {
  private readonly streams = new Map<number, MasterCommand>();
  /** Ids are never reused in a session (wire/stream-ids.ts); a resumed session keeps counting. */
  private nextStream = 0;
  private ignoredRejects = 0;
  readonly closed: Promise<void>;
  info: WorkerInfo = {};
  private closedBy: Error | null = null;

  private graceTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly name: string,
    readonly session: Session,
    readonly window: number,
    graceMs = 0,
    private readonly log: (line: string) => void = () => undefined,
  ) {
    super();
    // A detached session waits for its agent; Buildbot sees nothing unless the grace runs out.
    session.on('detached', (error: Error | null) => {
      log(`worker '${name}' lost its link (${error ? describeError(error) : 'closed'}); keeping its session for ${Math.round(graceMs / 1000)} s`);
      this.graceTimer = setTimeout(() => {
        session.close(new TetherError('SESSION_EXPIRED', `worker '${name}' did not reconnect within ${Math.round(graceMs / 1000)} s`));
      }, graceMs);
      // Waiting for an agent is no reason to keep a process alive; listeners and sockets are.
      this.graceTimer.unref();
    });
    session.on('attached', () => {
      if (this.graceTimer) clearTimeout(this.graceTimer);
      this.graceTimer = null;
    });
    this.closed = new Promise((resolve) => {
      session.once('close', (error: Error | null) => {
        if (this.graceTimer) clearTimeout(this.graceTimer);
        this.closedBy = error ?? new TetherError('PEER_TIMEOUT', 'the agent disconnected');
        for (const stream of this.streams.values()) stream.lost(this.closedBy);
        this.streams.clear();
        resolve();
      });
    });
    session.on('message', (m: Message) => this.onMessage(m));
    // This side refused the agent's message for a running command: the command has lost it, and
    // fails; the agent, told by the same REJECT, stops it (PROTOCOL.md 8.4).
    session.on('refused', (id: number, why: TetherError) => this.endCommand(id, failureOf(why.wireCode, why.message)));
  }

  get isOpen(): boolean {
    return !this.session.isClosed;
  }

  /** Why the session closed; null while it is open. */
  get closeReason(): Error | null {
    return this.closedBy;
  }

  send(m: Parameters<Session['send']>[0]): void {
    if (this.session.isClosed) throw this.closedBy ?? new TetherError('PEER_TIMEOUT', 'the agent is not connected');
    this.session.send(m);
  }

  sendIfOpen(m: Parameters<Session['send']>[0]): void {
    if (!this.session.isClosed) this.session.send(m);
  }

  abort(error: TetherError): void {
    this.session.close(error);
  }

  /** Throws TetherError for a message the agent should not have sent; the session answers it. */
  private onMessage(m: Message): void {
    if (m.type === MsgType.INFO) {
      this.info = m.info;
      this.emit('info', m.info);
      return;
    }
    if (m.type === MsgType.REJECT) {
      this.onReject(m);
      return;
    }
    if (!('stream' in m) || !FROM_AGENT.has(m.type)) throw new TetherError('BAD_MESSAGE', `message ${String(m.type)} is not for the master`);
    const stream = this.streams.get(m.stream);
    if (!stream) {
      // Credit crosses the COMPLETE of its command on the wire; anything else is the agent's error.
      if (m.type === MsgType.CREDIT && m.stream < this.nextStream) return;
      throw new TetherError('UNKNOWN_STREAM', `no command runs on stream ${m.stream}`);
    }
    stream.onMessage(m);
    if (m.type === MsgType.COMPLETE) this.ended(m.stream);
  }

  /** A REJECT fails the command it names, if that one runs; it can never reach another. */
  private onReject(m: Extract<Message, { type: typeof MsgType.REJECT }>): void {
    this.emit('reject', m);
    const failure = failureOf(m.code, m.message);
    if (m.stream !== null && this.endCommand(m.stream, failure)) return;
    if (++this.ignoredRejects > LOGGED_REJECTS) return;
    const about = m.stream === null ? 'a message it could not read' : `stream ${m.stream}, which is not running`;
    const more = this.ignoredRejects === LOGGED_REJECTS ? ' (further ones are not logged)' : '';
    this.log(`worker '${this.name}' rejected ${about}: ${failure.code} ${failure.message}; ignored${more}`);
  }

  /** Fails the command running on stream `id`, if one does; says whether one did. */
  private endCommand(id: number, failure: NonNullable<CommandResult['failure']>): boolean {
    const stream = this.streams.get(id);
    if (!stream) return false;
    stream.complete(failure);
    this.ended(id);
    return true;
  }

  private ended(id: number): void {
    this.streams.delete(id);
    // With every id used, the session ends after its last command, and the agent's next one counts from 0.
    if (this.nextStream > MAX_STREAM_ID && this.streams.size === 0) this.session.close(this.idsUsedUp());
  }

  private idsUsedUp(): TetherError {
    return new TetherError('SESSION_EXPIRED', `worker '${this.name}': this session has used all its ${MAX_STREAM_ID + 1} stream ids`);
  }

  run(command: string, args: Record<string, unknown>, sink: CommandSink): RemoteCommand {
    const id = this.nextStream;
    const stream = new MasterCommand(id, this, sink);
    if (this.session.isClosed) {
      stream.lost(this.closedBy ?? new TetherError('PEER_TIMEOUT', 'the agent is not connected'));
      return stream;
    }
    if (id > MAX_STREAM_ID) {
      stream.lost(this.idsUsedUp());
      return stream;
    }
    this.nextStream++;
    this.streams.set(id, stream);
    this.send({ type: MsgType.START, stream: id, command, args });
    return stream;
  }

  print(text: string): void {
    this.sendIfOpen({ type: MsgType.PRINT, text });
  }

  shutdown(): void {
    this.sendIfOpen({ type: MsgType.SHUTDOWN });
  }

  disconnect(reason: string): void {
    this.session.close(new TetherError('SHUTDOWN', reason));
  }

  close(error: TetherError | null = null): void {
    this.session.close(error);
  }
}
