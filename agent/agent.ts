/**
 * The agent: connects to the master, authenticates, reports worker info, runs
 * the commands the master starts, and reconnects with backoff when the link
 * drops. It stops on stop() (a signal) or the master's SHUTDOWN, its commands
 * as stop.ts says, in bounded time.
 */
import { EventEmitter } from 'node:events';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import { inspect } from 'node:util';
import { TetherError } from '../wire/errors';
import { Capability, DEFAULT_MAX_FRAME, SERIAL_MAX_FRAME, agentHandshake, sessionOptions } from '../wire/handshake';
import { Link } from '../wire/link';
import { MalformedMessage, type Message, MsgType } from '../wire/messages';
import { printableLog } from '../wire/printable';
import { Session } from '../wire/session';
import { MAX_STREAM_ID } from '../wire/stream-ids';
import { type OpenedTransport, asOpenedTransport } from '../wire/transport';
import { VERSION } from '../wire/version';
import { AgentCommand } from './agent-command';
import { withoutSecret } from './environment';
import { SpoolBudget } from './spool';
import { ProcessGroupRecords } from './orphans';
import { STOP_REASON, stopCommands } from './stop';
import { checkChildPipes } from './commands/child-pipes';
import { type Command, CommandFailure } from './commands/command';

export interface AgentOptions {
  name: string;
  secret: string;
  basedir: string;
  /**
   * Opens a byte stream to the master (TCP, TLS or serial). A bare stream is
   * taken as reliable and of unknown rate; an OpenedTransport (transport.ts
   * openEndpoint) says whether the line is lossy and how fast it is.
   */
  open: () => Promise<Duplex | OpenedTransport>;
  /** Describes where the master is, for log lines. */
  masterLabel: string;
  commands: Record<string, Command>;
  admin?: string;
  host?: string;
  maxFrame?: number;
  /** The largest flow-control window this agent takes (HELLO key 10); absent: the master's choice. */
  window?: number;
  /** Offer to resume sessions across dropped links (default true). */
  resume?: boolean;
  /** Bytes of command output held in memory while the master cannot take it; more spills to disk. */
  spoolMemory?: number;
  /** Longest wait between reconnection attempts, in ms. */
  maxBackoffMs?: number;
  log?: (line: string) => void;
}

const MIN_BACKOFF_MS = 500;
/** A HELLO lost on a serial line (the master's port was not open yet) is sent again soon. */
const SERIAL_HANDSHAKE_TIMEOUT_MS = 3000;
/** A session that lasted this long after its handshake resets the backoff. */
const SETTLED_SESSION_MS = 1000;

export function workerInfo(opts: Pick<AgentOptions, 'basedir' | 'admin' | 'host' | 'commands'>): Record<string, unknown> {
  return {
    os: process.platform,
    arch: process.arch,
    hostname: os.hostname(),
    basedir: opts.basedir,
    environ: withoutSecret(process.env),
    version: VERSION,
    admin: opts.admin ?? '',
    host: opts.host ?? '',
    numcpus: os.cpus().length || 1,
    commands: Object.keys(opts.commands),
  };
}

/** What a master sends on a stream besides START; anything else with a stream id is not for the agent. */
const TO_AGENT: ReadonlySet<Message['type']> = new Set([MsgType.STDIN, MsgType.DATA, MsgType.EOF, MsgType.CREDIT, MsgType.INTERRUPT]);

export class Agent extends EventEmitter {
  private readonly streams = new Map<number, AgentCommand>();
  private session: Session | null = null;
  private sessionId: Buffer | null = null;
  /** The highest id in a START of this session (-1: none yet); ids are never reused (wire/stream-ids.ts). */
  private highestStarted = -1;
  /** When the last handshake succeeded. */
  private authenticatedSince = 0;
  private readonly budget: SpoolBudget;
  private readonly processGroups: ProcessGroupRecords;
  private stopping = false;
  /** Aborted by stop(true): the commands' process groups get SIGKILL without waiting any longer. */
  private readonly hurry = new AbortController();
  /** Settles once stop() has ended the commands and closed the session. */
  private readonly stopped: Promise<void>;
  private markStopped!: () => void;
  private wake: (() => void) | null = null;
  private readonly log: (line: string) => void;

  constructor(private readonly opts: AgentOptions) {
    super();
    // The master's text (PRINT, REJECT, ERROR) goes into these lines: escaped, it cannot split or colour them.
    this.log = printableLog(opts.log);
    this.budget = new SpoolBudget(path.join(opts.basedir, '.tether-spool'), opts.spoolMemory);
    this.processGroups = new ProcessGroupRecords(opts.basedir, this.log);
    this.stopped = new Promise((resolve) => (this.markStopped = resolve));
  }

  /**
   * Runs until stop() or a SHUTDOWN from the master has stopped the commands
   * and closed the session; a connection attempt still waiting then (a TCP
   * connect to a silent host takes minutes to fail) does not hold it.
   */
  async run(): Promise<void> {
    // before connecting, so that it happens even while the master cannot be reached
    this.processGroups.killOrphans();
    void checkChildPipes().then((failure) => {
      if (failure !== null) this.log(`commands get socketpairs, not pipes, as their stdio (so /dev/stdout cannot be opened in them): ${failure}`);
    });
    void this.connectLoop();
    await this.stopped;
  }

  /** Connects, and connects again with backoff whenever the link is lost, until stop(). */
  private async connectLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      const started = Date.now();
      try {
        await this.connectOnce();
      } catch (error) {
        if (this.stopping) break;
        this.log(`${this.opts.masterLabel}: ${(error as Error).message}`);
      }
      if (this.stopping) break;
      // A session that got going starts the backoff afresh, so a dropped link is retried at once;
      // one the master ends right after the handshake counts as a failure.
      const wasUp = this.authenticatedSince >= started && Date.now() - this.authenticatedSince > SETTLED_SESSION_MS;
      failures = wasUp ? 1 : failures + 1;
      const cap = this.opts.maxBackoffMs ?? 60_000;
      const delay = Math.min(cap, MIN_BACKOFF_MS * 2 ** Math.min(failures - 1, 16)) * (0.5 + Math.random() / 2);
      this.log(`reconnecting in ${(delay / 1000).toFixed(1)} s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  /**
   * Stops the commands (stop.ts) and then the session, and no longer
   * reconnects. `urgent` (a second signal, even if the first was the
   * master's SHUTDOWN): KILL the commands' process groups now.
   */
  stop(urgent = false): void {
    if (urgent) this.hurry.abort();
    if (this.stopping) return;
    this.stopping = true;
    this.wake?.();
    void stopCommands([...this.streams.values()], () => this.session, this.hurry.signal, this.log).then(() => {
      this.session?.close(new TetherError('SHUTDOWN', STOP_REASON));
      this.markStopped();
    });
  }

  private async connectOnce(): Promise<void> {
    const { transport, lossy, bytesPerSecond } = asOpenedTransport(await this.opts.open());
    if (this.stopping) {
      transport.destroy(); // opened too late: the agent stopped meanwhile
      return;
    }
    const link = new Link(transport, { lossy, bytesPerSecond });
    const previous = this.session && !this.session.isClosed ? this.session : null;
    const resume = this.opts.resume ?? true;
    let established;
    try {
      established = await agentHandshake(link, {
        name: this.opts.name,
        secret: this.opts.secret,
        caps: Capability.DEFLATE | Capability.SELECTIVE_REPEAT | (resume ? Capability.RESUME : 0),
        // Small frames on a noisy line: a corrupted frame costs little to send again.
        maxFrame: this.opts.maxFrame ?? (lossy ? SERIAL_MAX_FRAME : DEFAULT_MAX_FRAME),
        window: this.opts.window,
        timeoutMs: lossy ? SERIAL_HANDSHAKE_TIMEOUT_MS : undefined,
        resume: previous && this.sessionId ? { session: this.sessionId, nextSeq: previous.nextRecvSeq } : undefined,
      });
    } catch (error) {
      link.close();
      throw error;
    }
    if (this.stopping) {
      link.close(); // authenticated too late: the agent stopped meanwhile
      return;
    }
    const { params } = established;
    this.authenticatedSince = Date.now();
    let session: Session;
    if (previous && established.resumed) {
      previous.resume(link, established.peerNextSeq);
      session = previous;
      this.log(`resumed the session with ${this.opts.masterLabel}; ${this.streams.size} command(s) carry on`);
    } else {
      if (previous) {
        this.log(`the master no longer knows this agent's session: stopping its ${this.streams.size} orphaned command(s)`);
        previous.close(new TetherError('SESSION_EXPIRED', 'the master ended the session'));
      }
      session = new Session(link, sessionOptions(params));
      this.session = session;
      this.sessionId = established.session;
      this.highestStarted = -1;
      session.on('message', (m: Message) => this.onMessage(session, params.window, m));
      // A START refused for a bad field (the session REJECTs it on its stream) uses its id all the same.
      session.on('rejected', (e: Error) => {
        if (e instanceof MalformedMessage && e.type === MsgType.START) this.takeStreamId(e.stream);
      });
      session.on('refused', (stream: number, why: TetherError) => this.endRejected(stream, `it refused a message of the master's for it (${why.message})`));
      session.on('forged', (count: number) => {
        if (count === 1) this.log(`a frame from ${this.opts.masterLabel} failed authentication (forged, replayed or reflected on the way): dropped`);
      });
      session.once('close', (error: Error | null) => this.dropStreams(error ?? new TetherError('PEER_TIMEOUT', 'connection lost')));
      session.send({ type: MsgType.INFO, info: workerInfo(this.opts) });
      this.log(`connected to ${this.opts.masterLabel} as '${this.opts.name}'`);
    }
    this.emit('connected');
    const error = await new Promise<Error | null>((resolve) => {
      const done = (e: Error | null) => {
        session.off('close', done);
        session.off('detached', done);
        resolve(e);
      };
      session.on('close', done);
      session.on('detached', done);
    });
    if (!session.isClosed) {
      this.log(`lost the link (${error?.message ?? 'closed'}); ${this.streams.size} command(s) keep running`);
      for (const stream of this.streams.values()) stream.linkDown();
    }
    this.emit('disconnected', error);
    if (error && !this.stopping) throw error;
  }

  /** The session ended for good: its commands are orphans, stop them and their process trees. */
  private dropStreams(error: Error): void {
    if (this.session?.isClosed) this.session = null;
    for (const stream of this.streams.values()) stream.lost(error);
    this.streams.clear();
  }

  private onMessage(session: Session, window: number, m: Message): void {
    switch (m.type) {
      case MsgType.START:
        this.start(session, window, m);
        return;
      case MsgType.PRINT:
        this.log(`message from master: ${m.text}`);
        return;
      case MsgType.SHUTDOWN:
        this.log('the master asked this agent to shut down');
        this.stop();
        return;
      case MsgType.REJECT:
        this.log(`the master rejected a message: ${inspect(m.message)}`);
        if (m.stream !== null) this.endRejected(m.stream, 'the master rejected a message of it');
        return;
    }
    if (!('stream' in m) || !TO_AGENT.has(m.type)) {
      session.reject('stream' in m ? m.stream : null, new TetherError('BAD_MESSAGE', `message ${String(m.type)} is not for the agent`));
      return;
    }
    const stream = this.streams.get(m.stream);
    if (stream) stream.onMessage(m);
    // A message that crossed its command's COMPLETE on the wire: nothing to do, nothing to say.
    else if (m.stream <= this.highestStarted) return;
    else session.reject(m.stream, new TetherError('UNKNOWN_STREAM', `no command was started on stream ${m.stream}`));
  }

  /**
   * A REJECT, sent or received, named a running command: the master has
   * ended it (PROTOCOL.md 8.4), so it stops here too, as for INTERRUPT, and
   * nothing more goes out on its stream (the master would refuse it).
   */
  private endRejected(id: number, why: string): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    this.streams.delete(id);
    this.log(`stopped the command on stream ${id}: ${why}`);
    stream.lost(new TetherError('BAD_MESSAGE', why));
  }

  /**
   * Makes `stream` the highest id seen in a START, if a START may use it;
   * else returns why not. Ids are never reused (wire/stream-ids.ts).
   */
  private takeStreamId(stream: number): string | null {
    if (stream <= this.highestStarted || stream > MAX_STREAM_ID) {
      const why = stream > MAX_STREAM_ID ? `is beyond the last id, ${MAX_STREAM_ID}` : `is not above the last one started, ${this.highestStarted}`;
      return `stream ${stream} ${why}: ids are never reused`;
    }
    this.highestStarted = stream;
    return null;
  }

  private start(session: Session, window: number, m: Extract<Message, { type: typeof MsgType.START }>): void {
    const refused = this.takeStreamId(m.stream);
    if (refused !== null) {
      session.reject(m.stream, new TetherError('BAD_MESSAGE', refused));
      return;
    }
    const command = Object.prototype.hasOwnProperty.call(this.opts.commands, m.command) ? this.opts.commands[m.command] : undefined;
    if (!command) {
      session.reject(m.stream, new TetherError('UNKNOWN_COMMAND', `this agent has no command '${m.command}'`));
      return;
    }
    if (this.stopping) {
      session.reject(m.stream, new TetherError('SHUTDOWN', `${STOP_REASON}: it starts no more commands`));
      return;
    }
    const stream = new AgentCommand(m.stream, this.opts.basedir, session, window, this.budget, this.processGroups);
    this.streams.set(m.stream, stream);
    command(m.args, stream).then(
      () => stream.complete(null),
      (error: Error) => {
        if (!(error instanceof CommandFailure)) this.log(`command ${m.command} failed: ${error.stack ?? error.message}`);
        stream.complete({ code: new TetherError('INTERNAL', '').wireCode, message: error.message });
      },
    );
    // The stream id stays taken until COMPLETE has gone out: credit for spooled output still arrives.
    void stream.finished.then(() => {
      if (this.streams.get(m.stream) === stream) this.streams.delete(m.stream);
    });
  }
}
