/**
 * The master's side of one authenticated agent: command streams over a
 * session, each with its own flow control in both directions.
 */
import { EventEmitter } from 'node:events';
import { CreditGate, CreditLedger, payloadLimit } from '../wire/credit';
import { TetherError, errorName } from '../wire/errors';
import { type Message, MsgType } from '../wire/messages';
import { printable } from '../wire/printable';
import type { Session } from '../wire/session';
import type { CommandResult, CommandSink, FileTimes, RemoteAgent, RemoteCommand, WorkerInfo } from './remote';

/** A command's failure as the agent reported it; its text reaches people, so it is escaped. */
function failureOf(code: number, message: string): NonNullable<CommandResult['failure']> {
  return { code: errorName(code) ?? String(code), message: printable(message) };
}

/** Most sink events a stream may have waiting: data is bounded by credit, this bounds the rest. */
const MAX_PENDING_EVENTS = 4096;


class MasterStream implements RemoteCommand {
  readonly result: Promise<CommandResult>;
  private settle!: (r: CommandResult) => void;
  private fail!: (e: Error) => void;
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;
  private readonly ledger: CreditLedger;
  readonly gate: CreditGate;
  private finished = false;

  constructor(
    readonly stream: number,
    private readonly conn: AgentConnection,
    private readonly sink: CommandSink,
  ) {
    this.ledger = new CreditLedger(conn.window);
    this.gate = new CreditGate(conn.window);
    this.result = new Promise((resolve, reject) => {
      this.settle = resolve;
      this.fail = reject;
    });
    this.result.catch(() => undefined);
  }

  /** Queues a sink event; `bytes` of payload get their credit back once it is delivered. */
  deliver(bytes: number, event: () => void | Promise<void>): void {
    if (bytes > 0) this.ledger.received(bytes);
    if (++this.pending > MAX_PENDING_EVENTS) {
      throw new TetherError('FLOW_CONTROL', `stream ${this.stream}: more than ${MAX_PENDING_EVENTS} undelivered events`);
    }
    this.chain = this.chain.then(async () => {
      try {
        await event();
      } finally {
        this.pending--;
        if (bytes > 0) {
          const grant = this.ledger.consumedBytes(bytes);
          if (grant > 0) this.conn.sendIfOpen({ type: MsgType.CREDIT, stream: this.stream, bytes: grant });
        }
      }
    });
    this.chain.catch((error: Error) => this.conn.abort(new TetherError('INTERNAL', `sink failed: ${error.message}`)));
  }

  complete(failure: CommandResult['failure']): void {
    this.finished = true;
    this.gate.fail(new TetherError('UNKNOWN_STREAM', `stream ${this.stream} has completed`));
    this.chain.then(() => this.settle({ failure }), (error: Error) => this.fail(error));
  }

  lost(error: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.gate.fail(error);
    this.chain.then(() => this.fail(error), () => this.fail(error));
  }

  private async sendPayload(make: (chunk: Buffer) => Parameters<Session['send']>[0], data: Buffer): Promise<void> {
    const limit = payloadLimit(this.conn.session.maxBody, this.conn.window);
    for (let at = 0; at < data.length; at += limit) {
      const chunk = data.subarray(at, at + limit);
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

  onMessage(m: Message): void {
    const sink = this.sink;
    switch (m.type) {
      case 'output': {
        const target = m.channel === 0 ? sink.stdout : sink.stderr;
        this.deliver(m.data.length, () => target?.call(sink, m.data));
        return;
      }
      case MsgType.LOG:
        this.deliver(m.data.length, () => sink.log?.(m.name, m.data));
        return;
      case MsgType.DATA:
        this.deliver(m.data.length, () => sink.fileData?.(m.data));
        return;
      case MsgType.EOF:
        this.deliver(0, () => sink.fileClose?.(m.times ?? undefined));
        return;
      case MsgType.HEADER:
        this.deliver(0, () => sink.header?.(m.text));
        return;
      case MsgType.UPDATE:
        this.deliver(0, () => sink.update?.(m.key, m.value));
        return;
      case MsgType.CREDIT:
        this.gate.grant(m.bytes);
        return;
      case MsgType.COMPLETE:
        this.complete(m.failure && failureOf(m.failure.code, m.failure.message));
        return;
      default:
        throw new TetherError('BAD_MESSAGE', `message ${String(m.type)} is not for the master`);
    }
  }
}

export type { FileTimes };

export class AgentConnection extends EventEmitter implements RemoteAgent {
  private readonly streams = new Map<number, MasterStream>();
  readonly closed: Promise<void>;
  info: WorkerInfo = {};
  private closeReason: Error | null = null;

  private graceTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly name: string,
    readonly session: Session,
    readonly window: number,
    graceMs = 0,
    log: (line: string) => void = () => undefined,
  ) {
    super();
    // A detached session waits for its agent; Buildbot sees nothing unless the grace runs out.
    session.on('detached', (error: Error | null) => {
      log(`worker '${name}' lost its link (${error?.message ?? 'closed'}); keeping its session for ${Math.round(graceMs / 1000)} s`);
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
        this.closeReason = error ?? new TetherError('PEER_TIMEOUT', 'the agent disconnected');
        for (const stream of this.streams.values()) stream.lost(this.closeReason);
        this.streams.clear();
        resolve();
      });
    });
    session.on('message', (m: Message) => this.onMessage(m));
  }

  get isOpen(): boolean {
    return !this.session.isClosed;
  }

  send(m: Parameters<Session['send']>[0]): void {
    if (this.session.isClosed) throw this.closeReason ?? new TetherError('PEER_TIMEOUT', 'the agent is not connected');
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
      this.emit('reject', m);
      const stream = m.stream === null ? undefined : this.streams.get(m.stream);
      stream?.complete(failureOf(m.code, m.message));
      if (m.stream !== null) this.streams.delete(m.stream);
      return;
    }
    if (!('stream' in m)) throw new TetherError('BAD_MESSAGE', `message ${String(m.type)} is not for the master`);
    const stream = this.streams.get(m.stream);
    if (!stream) {
      // Late credit for a finished stream is normal; anything else is the agent's error.
      if (m.type === MsgType.CREDIT) return;
      throw new TetherError('UNKNOWN_STREAM', `no command runs on stream ${m.stream}`);
    }
    stream.onMessage(m);
    if (m.type === MsgType.COMPLETE) this.streams.delete(m.stream);
  }

  private allocateStream(): number {
    let id = 0;
    while (this.streams.has(id)) id++;
    return id;
  }

  run(command: string, args: Record<string, unknown>, sink: CommandSink): RemoteCommand {
    const id = this.allocateStream();
    const stream = new MasterStream(id, this, sink);
    if (this.session.isClosed) {
      stream.lost(this.closeReason ?? new TetherError('PEER_TIMEOUT', 'the agent is not connected'));
      return stream;
    }
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
