/**
 * The Buildbot bridge: for one connected Tether agent, a worker connection to a
 * real Buildbot master over Buildbot's msgpack worker protocol
 * ('msgpack_experimental_v7'), so that to Buildbot the agent is an ordinary worker.
 *
 * Protocol facts are in buildbot-protocol.ts; output shaping in buildbot-lines.ts;
 * the download pull loop in buildbot-transfer.ts.
 *
 * Flow control: every sink method returns a promise only when the bridge holds
 * more than maxUnackedBytes of updates that Buildbot has not acknowledged yet
 * (queued or sent), so a slow master slows the agent. Upload bytes are sent one
 * chunk at a time, each awaited until Buildbot acknowledged it; download blocks are
 * pulled one at a time and pushed with the agent's flow-controlled writeFile.
 *
 * Ordering per command: output/status updates keep the agent's order (one queue,
 * consecutive same-stream lines coalesced, flushed after flushDelayMs, or
 * streamingFlushDelayMs while output streams, or when bufferSize is reached);
 * 'complete' is sent only after every update of the command
 * was acknowledged, the writer was closed and the reader was closed.
 *
 * Output note: the msgpack master needs whole lines, so a trailing partial line is
 * held (at most max_line_length characters per stream) until its newline, the 'rc'
 * update, an interrupt or the end of the command, where '\n' is added — exactly
 * what buildbot-worker does. Complete lines are never held more than
 * streamingFlushDelayMs, and a line after a quiet spell no more than flushDelayMs.
 */
import WebSocket from 'ws';
import { encode } from '@msgpack/msgpack';
import type { CommandSink, FileTimes, RemoteAgent, RemoteCommand } from './remote';
import {
  DEFAULT_MAX_LINE_LENGTH,
  LineBoundaryFinder,
  LineInfo,
  StreamDecoder,
  joinLineInfo,
  pythonNewlineRe,
  splitLineInfo,
} from './buildbot-lines';
import {
  COMMAND_ALIASES,
  ConnectionLostError,
  Msg,
  MsgpackPeer,
  PathMapper,
  RemoteError,
  WORKER_COMMAND_NAMES,
  basicAuthHeader,
  buildWorkerInfo,
  errorText,
  reportedBasedir,
  systemOf,
} from './buildbot-protocol';
import { pullDownload } from './buildbot-transfer';
import { printableLog } from '../wire/printable';

export { buildWorkerInfo, PathMapper, workerCommands, basicAuthHeader } from './buildbot-protocol';
export { pullDownload } from './buildbot-transfer';
export type { DownloadPull, DownloadResult } from './buildbot-transfer';
export { LineBoundaryFinder, StreamDecoder, pythonNewlineRe } from './buildbot-lines';

export interface BridgeOptions {
  /** ws://host:port of the master's msgpack_experimental_v7 port (a path is kept; default '/'). */
  buildbotUrl: string;
  workerName: string;
  password: string;
  log?: (line: string) => void;
  /** start() gives up after this long without Buildbot accepting the worker (default 30000). */
  connectTimeoutMs?: number;
  /** WebSocket ping period; a master silent for two periods is dropped (default 30000, 0 = off). */
  pingIntervalMs?: number;
  /** Longest time a complete output line after a quiet spell waits to be coalesced with more (default 5). */
  flushDelayMs?: number;
  /**
   * The same while output streams (the last flush was less than this long
   * ago): lines then gather into fewer, bigger updates, each of which costs
   * the master the same (default 50).
   */
  streamingFlushDelayMs?: number;
  /** Unacknowledged update bytes above which the sink pushes back on the agent (default 1 MiB). */
  maxUnackedBytes?: number;
  /** Largest message accepted from Buildbot (default 16 MiB). */
  maxPayload?: number;
}

const DEFAULT_BUFFER_SIZE = 64 * 1024;
const LINE_KEYS = new Set(['stdout', 'stderr', 'header']);

type QueueEntry =
  | { kind: 'lines'; key: string; logname?: string; info: LineInfo; size: number }
  | { kind: 'value'; key: string; value: unknown; size: number };

/**
 * Upload bytes per write to Buildbot: the step's blocksize, but at least
 * FileUpload's default (DirectoryUpload's 16 KiB would cost a round trip per
 * 16 KiB) and at most 4 MiB (held in memory per upload).
 */
const MIN_UPLOAD_WRITE = 256 * 1024;
const MAX_UPLOAD_WRITE = 4 * 1024 * 1024;

class ActiveCommand {
  remote: RemoteCommand | null = null;
  readonly decoders = new Map<string, StreamDecoder>();
  readonly lbfs = new Map<string, LineBoundaryFinder>();
  queue: QueueEntry[] = [];
  queuedBytes = 0;
  timer: NodeJS.Timeout | null = null;
  /** When the queue was last sent (Date.now()): output since then is streaming. */
  lastFlushAt = 0;
  readonly acks = new Set<Promise<void>>();
  writerChain: Promise<void> = Promise.resolve();
  writerFailed = false;
  /** Upload bytes gathered into one write of the step's blocksize, as buildbot-worker sends them. */
  uploadBlock = MIN_UPLOAD_WRITE;
  fileParts: Buffer[] = [];
  fileBytes = 0;
  transfer: Promise<void> = Promise.resolve();
  /** Bridge-side failure (transfer errors), reported in 'complete' if the agent reported none. */
  failure: string | null = null;
  /** No more output is accepted (finished or the connection is gone). */
  dead = false;
  noWriterWarned = false;

  constructor(
    readonly key: string,
    readonly wireId: unknown,
    readonly name: string,
    readonly builder: string | null,
  ) {}

  get label(): string {
    return `${this.name} [${this.key}]${this.builder ? ` (${this.builder})` : ''}`;
  }
}

export class BuildbotBridge {
  readonly closed: Promise<void>;
  /** Why the connection ended (set once `closed` resolved). */
  closeReason: string | null = null;

  private readonly log: (line: string) => void;
  private readonly connectTimeoutMs: number;
  private readonly pingIntervalMs: number;
  private readonly flushDelayMs: number;
  private readonly streamingFlushDelayMs: number;
  private readonly maxUnacked: number;
  private readonly maxPayload: number;

  private ws: WebSocket | null = null;
  private peer: MsgpackPeer | null = null;
  private startPromise: Promise<void> | null = null;
  private accept: (() => void) | null = null;
  private rejectStart: ((e: Error) => void) | null = null;
  private accepted = false;
  private resolveClosed!: () => void;
  private isClosed = false;
  private closingReason: string | null = null;
  private agentGone = false;
  private pingTimer: NodeJS.Timeout | null = null;

  private paths: PathMapper | null = null;
  private newlineRe = pythonNewlineRe(undefined);
  private maxLineLength = DEFAULT_MAX_LINE_LENGTH;
  private bufferSize = DEFAULT_BUFFER_SIZE;

  private readonly commands = new Map<string, ActiveCommand>();
  private inflight = 0;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly agent: RemoteAgent,
    private readonly opts: BridgeOptions,
  ) {
    // The agent's and Buildbot's text goes into these lines: escaped, it cannot split or colour them.
    const sink = printableLog(opts.log ?? ((line: string) => process.stderr.write(line + '\n')));
    this.log = (line) => {
      try {
        sink(`buildbot-bridge[${opts.workerName}]: ${line}`);
      } catch {
        // a broken logger must not break the bridge
      }
    };
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 30_000;
    this.pingIntervalMs = opts.pingIntervalMs ?? 30_000;
    this.flushDelayMs = Math.max(0, opts.flushDelayMs ?? 5);
    this.streamingFlushDelayMs = Math.max(this.flushDelayMs, opts.streamingFlushDelayMs ?? 50);
    this.maxUnacked = Math.max(1024, opts.maxUnackedBytes ?? 1024 * 1024);
    this.maxPayload = opts.maxPayload ?? 16 * 1024 * 1024;
    this.closed = new Promise<void>((resolve) => {
      this.resolveClosed = resolve;
    });
    agent.closed.then(
      () => this.onAgentClosed(),
      () => this.onAgentClosed(),
    );
  }

  /** Number of commands Buildbot started that have not completed yet. */
  get runningCommands(): number {
    return this.commands.size;
  }

  /** Connects and authenticates; resolves once Buildbot accepted the worker (its set_worker_settings). */
  start(): Promise<void> {
    if (!this.startPromise) this.startPromise = this.doStart();
    return this.startPromise;
  }

  /** Disconnects from Buildbot (running commands are interrupted); resolves with `closed`. */
  async close(): Promise<void> {
    this.shutdown('closed by tether-master');
    await this.closed;
  }

  // ---------------------------------------------------------------- connection

  private doStart(): Promise<void> {
    if (this.isClosed || this.closingReason) return Promise.reject(new Error('bridge already closed'));
    if (this.agentGone) return Promise.reject(new Error('agent session already ended'));
    let url: URL;
    let auth: string;
    try {
      url = new URL(this.opts.buildbotUrl);
      if (url.protocol === 'http:') url.protocol = 'ws:';
      else if (url.protocol === 'https:') url.protocol = 'wss:';
      if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new Error(`unsupported scheme ${url.protocol}`);
      url.username = '';
      url.password = '';
      auth = basicAuthHeader(this.opts.workerName, this.opts.password);
    } catch (e) {
      return Promise.reject(new Error(`bad Buildbot URL or worker name: ${errorText(e)}`));
    }
    const where = url.toString();
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | null = null;
      const done = (err: Error | null): void => {
        if (this.accept === null && this.rejectStart === null) return;
        this.accept = null;
        this.rejectStart = null;
        if (timer) clearTimeout(timer);
        if (err) {
          this.log(`could not attach to Buildbot at ${where}: ${err.message}`);
          this.shutdown(`start failed: ${err.message}`);
          reject(err);
        } else {
          this.accepted = true;
          this.log(`Buildbot at ${where} accepted worker '${this.opts.workerName}'`);
          resolve();
        }
      };
      this.accept = () => done(null);
      this.rejectStart = (e) => done(e);
      timer = setTimeout(
        () => done(new Error(`Buildbot did not accept the worker within ${this.connectTimeoutMs} ms`)),
        this.connectTimeoutMs,
      );
      timer.unref?.();

      this.log(`connecting to ${where}`);
      const ws = new WebSocket(where, {
        headers: { Authorization: auth },
        perMessageDeflate: false,
        maxPayload: this.maxPayload,
        handshakeTimeout: this.connectTimeoutMs,
      });
      this.ws = ws;
      this.peer = new MsgpackPeer(ws, (op, msg) => this.handle(op, msg), this.log);
      ws.on('error', (err) => {
        const m = /Unexpected server response: (\d+)/.exec(err.message);
        const text =
          m && m[1] === '401'
            ? `Buildbot refused worker '${this.opts.workerName}' (HTTP 401: unknown worker name or wrong password)`
            : m
              ? `Buildbot refused the WebSocket upgrade (HTTP ${m[1]})`
              : `WebSocket error: ${err.message}`;
        if (this.rejectStart) this.rejectStart(new Error(text));
        else this.log(text);
      });
      ws.on('open', () => {
        this.log('WebSocket open; waiting for Buildbot to attach the worker');
        this.startPing(ws);
      });
      ws.on('close', (code, reasonBuf) => {
        const reason = reasonBuf.toString('utf8');
        const text = this.closingReason ?? `Buildbot closed the connection (code ${code}${reason ? `, ${reason}` : ''})`;
        if (this.rejectStart) {
          this.rejectStart(
            new Error(
              `Buildbot closed the connection before attaching the worker (code ${code}${reason ? `, ${reason}` : ''}; ` +
                'unknown worker, a duplicate connection for this worker, or a master error - see the master log)',
            ),
          );
        }
        this.onWsClosed(text);
      });
    });
  }

  private startPing(ws: WebSocket): void {
    if (!(this.pingIntervalMs > 0)) return;
    let alive = true;
    const mark = (): void => {
      alive = true;
    };
    ws.on('pong', mark);
    ws.on('message', mark);
    this.pingTimer = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (!alive) {
        this.log(`no answer from Buildbot for ${(2 * this.pingIntervalMs) / 1000} s; dropping the connection`);
        this.closingReason = 'Buildbot stopped answering pings';
        ws.terminate();
        return;
      }
      alive = false;
      ws.ping();
    }, this.pingIntervalMs);
    this.pingTimer.unref?.();
  }

  private shutdown(reason: string): void {
    if (this.isClosed) return;
    if (!this.closingReason) this.closingReason = reason;
    for (const cmd of this.commands.values()) this.interruptAgent(cmd, `Buildbot connection closing: ${reason}`);
    const ws = this.ws;
    if (!ws) {
      this.onWsClosed(reason);
      return;
    }
    if (ws.readyState === WebSocket.CONNECTING) {
      ws.terminate();
      return;
    }
    if (ws.readyState === WebSocket.OPEN) {
      ws.close(1000, 'tether worker going away');
      const t = setTimeout(() => ws.terminate(), 5000);
      t.unref?.();
    }
  }

  private onAgentClosed(): void {
    this.agentGone = true;
    if (this.isClosed) return;
    this.log('agent session ended; disconnecting the worker from Buildbot');
    this.shutdown('agent session ended');
  }

  private onWsClosed(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeReason = reason;
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (this.accepted || !this.startPromise) this.log(`disconnected: ${reason}`);
    for (const cmd of this.commands.values()) {
      this.interruptAgent(cmd, `Buildbot connection lost: ${reason}`);
      this.killOutput(cmd);
    }
    this.releaseWaiters(true);
    this.resolveClosed();
  }

  private interruptAgent(cmd: ActiveCommand, why: string): void {
    if (cmd.dead || !cmd.remote) return;
    try {
      cmd.remote.interrupt(why);
    } catch (e) {
      this.log(`interrupting ${cmd.label} failed: ${errorText(e)}`);
    }
  }

  private killOutput(cmd: ActiveCommand): void {
    cmd.dead = true;
    if (cmd.timer) clearTimeout(cmd.timer);
    cmd.timer = null;
    this.inflight -= cmd.queuedBytes;
    cmd.queue = [];
    cmd.queuedBytes = 0;
  }

  // ---------------------------------------------------------------- master requests

  private handle(op: string, msg: Msg): unknown {
    switch (op) {
      case 'keepalive':
        return null;
      case 'print': {
        const text = typeof msg.message === 'string' ? msg.message : String(msg.message ?? '');
        this.log(`message from Buildbot: ${text}`);
        this.agent.print(text);
        return null;
      }
      case 'get_worker_info': {
        const info = buildWorkerInfo(this.agent.info);
        this.paths = new PathMapper(info.basedir as string, info.system as 'posix' | 'nt');
        return info;
      }
      case 'set_worker_settings': {
        const args = msg.args as Record<string, unknown> | undefined;
        if (!args || typeof args !== 'object') throw new Error('message did not contain obligatory "args" key');
        for (const k of ['buffer_size', 'buffer_timeout', 'newline_re', 'max_line_length']) {
          if (!(k in args)) throw new Error('message did not contain obligatory settings for worker');
        }
        this.newlineRe = pythonNewlineRe(args.newline_re);
        const mll = Number(args.max_line_length);
        this.maxLineLength = Number.isInteger(mll) && mll >= 3 ? mll : DEFAULT_MAX_LINE_LENGTH;
        const bs = Number(args.buffer_size);
        this.bufferSize = Number.isInteger(bs) && bs >= 1024 ? Math.min(bs, 4 * 1024 * 1024) : DEFAULT_BUFFER_SIZE;
        // buffer_timeout (seconds) is deliberately not used: complete lines go out within streamingFlushDelayMs.
        this.accept?.();
        return null;
      }
      case 'start_command':
        return this.startCommand(msg);
      case 'interrupt_command': {
        const cmd = this.commands.get(String(msg.command_id));
        const why = String(msg.why ?? 'interrupted by Buildbot');
        if (!cmd || cmd.dead || !cmd.remote) {
          this.log(`asked to interrupt command ${String(msg.command_id)} (${why}), but none was running`);
          return null;
        }
        this.log(`interrupting ${cmd.label}: ${why}`);
        this.flushLines(cmd);
        this.flushNow(cmd);
        cmd.remote.interrupt(why);
        return null;
      }
      case 'shutdown':
        this.log('Buildbot asked the worker to shut down; telling the agent');
        this.agent.shutdown();
        return null;
      default:
        throw new Error(`Command ${op} does not exist.`);
    }
  }

  private startCommand(msg: Msg): null {
    for (const k of ['command_id', 'command_name', 'args']) {
      if (!(k in msg)) throw new Error(`message did not contain obligatory "${k}" key`);
    }
    const rawName = String(msg.command_name);
    const name = COMMAND_ALIASES[rawName] ?? rawName;
    if (!(WORKER_COMMAND_NAMES as readonly string[]).includes(name)) {
      throw new Error(`unrecognized WorkerCommand '${rawName}'`);
    }
    const rawArgs = msg.args;
    if (!rawArgs || typeof rawArgs !== 'object' || Array.isArray(rawArgs)) throw new Error('start_command args must be a map');
    const key = String(msg.command_id);
    if (this.commands.has(key)) throw new Error(`command_id ${key} is already running`);
    if (!this.paths) {
      this.paths = new PathMapper(reportedBasedir(this.agent.info), systemOf(this.agent.info));
    }
    const args = this.paths.mapArgs(name, rawArgs as Record<string, unknown>);
    delete args.writer;
    delete args.reader;
    const builder = typeof msg.builder_name === 'string' ? msg.builder_name : null;
    const cmd = new ActiveCommand(key, msg.command_id, name, builder);
    if (typeof args.blocksize === 'number') cmd.uploadBlock = Math.min(Math.max(args.blocksize, MIN_UPLOAD_WRITE), MAX_UPLOAD_WRITE);
    this.commands.set(key, cmd);
    const sink: CommandSink = {
      stdout: (c) => this.output(cmd, 'stdout', undefined, c),
      stderr: (c) => this.output(cmd, 'stderr', undefined, c),
      header: (t) => this.output(cmd, 'header', undefined, t),
      log: (n, c) => this.output(cmd, 'log', n, c),
      update: (k, v) => this.update(cmd, k, v),
      fileData: (c) => this.fileData(cmd, c),
      fileClose: (t) => this.fileClose(cmd, t),
    };
    let remote: RemoteCommand;
    try {
      remote = this.agent.run(name, args, sink);
    } catch (e) {
      this.commands.delete(key);
      cmd.dead = true;
      this.log(`could not start ${cmd.label} on the agent: ${errorText(e)}`);
      throw new Error(`could not start ${name} on the tether agent: ${errorText(e)}`);
    }
    cmd.remote = remote;
    const where =
      name === 'shell' && typeof args.workdir === 'string' ? ` in ${args.workdir}` : typeof args.path === 'string' ? ` on ${args.path}` : '';
    this.log(`started ${cmd.label}${where}`);
    const settled = remote.result.then(
      () => undefined,
      () => undefined,
    );
    if (name === 'download_file') this.startDownload(cmd, remote, args, settled);
    remote.result.then(
      (r) => this.finish(cmd, r.failure ? `${r.failure.code}: ${r.failure.message}` : null),
      (e) => this.finish(cmd, `the tether agent lost the command: ${errorText(e)}`),
    );
    return null;
  }

  // ---------------------------------------------------------------- output and updates

  private output(cmd: ActiveCommand, key: string, logname: string | undefined, chunk: Buffer | string): void | Promise<void> {
    if (cmd.dead) return;
    const stream = key === 'log' ? `log:${logname ?? ''}` : key;
    let text: string;
    if (typeof chunk === 'string') {
      text = chunk;
    } else {
      let d = cmd.decoders.get(stream);
      if (!d) cmd.decoders.set(stream, (d = new StreamDecoder()));
      text = d.write(chunk);
    }
    const info = this.lbf(cmd, stream).append(text, Date.now() / 1000);
    if (info) this.enqueueLines(cmd, key, logname, info);
    return this.backpressure();
  }

  private lbf(cmd: ActiveCommand, stream: string): LineBoundaryFinder {
    let f = cmd.lbfs.get(stream);
    if (!f) cmd.lbfs.set(stream, (f = new LineBoundaryFinder(this.newlineRe, this.maxLineLength)));
    return f;
  }

  private update(cmd: ActiveCommand, key: string, value: unknown): void | Promise<void> {
    if (cmd.dead) return;
    if (LINE_KEYS.has(key) && (typeof value === 'string' || Buffer.isBuffer(value))) {
      return this.output(cmd, key, undefined, value);
    }
    if (key === 'log' && Array.isArray(value) && value.length === 2 && typeof value[0] === 'string') {
      const data = value[1];
      if (typeof data === 'string' || Buffer.isBuffer(data)) return this.output(cmd, 'log', value[0], data);
    }
    // The exit code ends the output: emit held partial lines before Buildbot prints "program finished".
    if (key === 'rc') this.flushLines(cmd);
    let size = 20;
    try {
      size = Math.max(20, encode(value).length);
    } catch {
      // unencodable values fail when sent; 20 is what buildbot-worker counts
    }
    this.push(cmd, { kind: 'value', key, value, size });
    return this.backpressure();
  }

  /** Emits every held partial line (with '\n' added) and any half character (as U+FFFD). */
  private flushLines(cmd: ActiveCommand): void {
    if (cmd.dead) return;
    const now = Date.now() / 1000;
    for (const [stream, d] of cmd.decoders) {
      const tail = d.end();
      if (tail !== '') {
        const info = this.lbf(cmd, stream).append(tail, now);
        if (info) this.enqueueStream(cmd, stream, info);
      }
    }
    for (const stream of [...cmd.lbfs.keys()].sort()) {
      const info = cmd.lbfs.get(stream)!.flush();
      if (info) this.enqueueStream(cmd, stream, info);
    }
  }

  private enqueueStream(cmd: ActiveCommand, stream: string, info: LineInfo): void {
    if (stream.startsWith('log:')) this.enqueueLines(cmd, 'log', stream.slice(4), info);
    else this.enqueueLines(cmd, stream, undefined, info);
  }

  private enqueueLines(cmd: ActiveCommand, key: string, logname: string | undefined, info: LineInfo): void {
    for (const piece of splitLineInfo(info, this.bufferSize)) {
      const size = piece[0].length + 16 * piece[1].length;
      const last = cmd.queue[cmd.queue.length - 1];
      if (last && last.kind === 'lines' && last.key === key && last.logname === logname && last.size + size <= this.bufferSize) {
        last.info = joinLineInfo(last.info, piece);
        last.size += size;
        cmd.queuedBytes += size;
        this.inflight += size;
        this.scheduleFlush(cmd);
      } else {
        this.push(cmd, { kind: 'lines', key, logname, info: piece, size });
      }
    }
  }

  private push(cmd: ActiveCommand, e: QueueEntry): void {
    cmd.queue.push(e);
    cmd.queuedBytes += e.size;
    this.inflight += e.size;
    this.scheduleFlush(cmd);
  }

  private scheduleFlush(cmd: ActiveCommand): void {
    if (cmd.queuedBytes >= this.bufferSize) {
      this.flushNow(cmd);
      return;
    }
    if (cmd.timer) return;
    const streaming = Date.now() - cmd.lastFlushAt < this.streamingFlushDelayMs;
    cmd.timer = setTimeout(() => this.flushNow(cmd), streaming ? this.streamingFlushDelayMs : this.flushDelayMs);
  }

  /** Sends everything queued for cmd, as 'update' messages of at most bufferSize each. */
  private flushNow(cmd: ActiveCommand): void {
    if (cmd.timer) clearTimeout(cmd.timer);
    cmd.timer = null;
    cmd.lastFlushAt = Date.now();
    while (cmd.queue.length > 0 && !cmd.dead) {
      let bytes = 0;
      let n = 0;
      while (n < cmd.queue.length && (n === 0 || bytes + cmd.queue[n].size <= this.bufferSize)) {
        bytes += cmd.queue[n].size;
        n++;
      }
      const batch = cmd.queue.splice(0, n);
      cmd.queuedBytes -= bytes;
      this.sendUpdate(cmd, batch, bytes);
    }
  }

  private sendUpdate(cmd: ActiveCommand, batch: QueueEntry[], bytes: number): void {
    const args = batch.map((e) => {
      if (e.kind === 'value') return [e.key, e.value];
      if (e.key === 'log') return ['log', [e.logname ?? '', e.info]];
      return [e.key, e.info];
    });
    const peer = this.peer;
    const sent = peer
      ? peer.request('update', { command_id: cmd.wireId, args })
      : Promise.reject(new ConnectionLostError());
    const ack: Promise<void> = sent.then(
      () => undefined,
      (e) => {
        if (!(e instanceof ConnectionLostError)) this.log(`Buildbot rejected an update of ${cmd.label}: ${errorText(e)}`);
      },
    );
    const tracked = ack.finally(() => {
      cmd.acks.delete(tracked);
      this.inflight -= bytes;
      this.releaseWaiters(false);
    });
    cmd.acks.add(tracked);
  }

  private backpressure(): void | Promise<void> {
    if (this.inflight <= this.maxUnacked || this.isClosed) return;
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private releaseWaiters(all: boolean): void {
    if (this.waiters.length === 0) return;
    if (!all && this.inflight > this.maxUnacked / 2) return;
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }

  // ---------------------------------------------------------------- transfers

  private writerOps(cmd: ActiveCommand): { write: string; close: string } | null {
    if (cmd.name === 'upload_file') return { write: 'update_upload_file_write', close: 'update_upload_file_close' };
    if (cmd.name === 'upload_directory') return { write: 'update_upload_directory_write', close: 'update_upload_directory_unpack' };
    return null;
  }

  /** Runs one writer call after the previous one; a failure fails the transfer and interrupts the agent. */
  private writerStep(cmd: ActiveCommand, what: string, fn: (peer: MsgpackPeer, ops: { write: string; close: string }) => Promise<void>): Promise<void> | void {
    if (cmd.dead || cmd.writerFailed) return;
    const ops = this.writerOps(cmd);
    if (!ops) {
      if (!cmd.noWriterWarned) this.log(`${cmd.label} sent ${what} but has no Buildbot writer; dropped`);
      cmd.noWriterWarned = true;
      return;
    }
    const next = cmd.writerChain.then(async () => {
      const peer = this.peer;
      if (cmd.dead || cmd.writerFailed || !peer) return;
      try {
        await fn(peer, ops);
      } catch (e) {
        if (e instanceof ConnectionLostError) return;
        cmd.writerFailed = true;
        cmd.failure = `upload to Buildbot failed (${what}): ${errorText(e)}`;
        this.log(`${cmd.label}: ${cmd.failure}; interrupting the agent's command`);
        this.interruptAgent(cmd, cmd.failure);
      }
    });
    cmd.writerChain = next;
    return next;
  }

  /**
   * Upload bytes arrive in frame-sized pieces; Buildbot acknowledges each
   * write, so they are gathered into writes of cmd.uploadBlock bytes (one
   * round trip each). The agent waits only while a write is under way.
   */
  private fileData(cmd: ActiveCommand, chunk: Buffer): Promise<void> | void {
    if (chunk.length === 0) return;
    cmd.fileParts.push(chunk);
    cmd.fileBytes += chunk.length;
    if (cmd.fileBytes >= cmd.uploadBlock) return this.writeGathered(cmd);
  }

  private writeGathered(cmd: ActiveCommand): Promise<void> | void {
    if (cmd.fileBytes === 0) return;
    const data = cmd.fileParts.length === 1 ? cmd.fileParts[0] : Buffer.concat(cmd.fileParts);
    cmd.fileParts = [];
    cmd.fileBytes = 0;
    return this.writerStep(cmd, 'file data', async (peer, ops) => {
      await peer.request(ops.write, { command_id: cmd.wireId, args: data });
    });
  }

  private fileClose(cmd: ActiveCommand, times?: FileTimes): Promise<void> | void {
    void this.writeGathered(cmd);
    return this.writerStep(cmd, 'close', async (peer, ops) => {
      await peer.request(ops.close, { command_id: cmd.wireId });
      if (times && cmd.name === 'upload_file') {
        try {
          await peer.request('update_upload_file_utime', {
            command_id: cmd.wireId,
            access_time: times.atime,
            modified_time: times.mtime,
          });
        } catch (e) {
          if (!(e instanceof RemoteError)) throw e;
          // Buildbot 3.7's msgpack master calls remote_utime('access_time', 'modified_time')
          // (two string literals) and always fails here; the file itself is complete.
          this.log(`${cmd.label}: Buildbot could not set the uploaded file's times (${e.message}); the file is kept without them`);
        }
      }
    });
  }

  private startDownload(cmd: ActiveCommand, remote: RemoteCommand, args: Record<string, unknown>, settled: Promise<void>): void {
    const peer = this.peer;
    if (!peer) return;
    cmd.transfer = pullDownload({
      read: (length) => peer.request('update_read_file', { command_id: cmd.wireId, length }),
      close: () => peer.request('update_read_file_close', { command_id: cmd.wireId }),
      write: (chunk) => remote.writeFile(chunk),
      end: () => remote.endFile(),
      blocksize: args.blocksize,
      maxsize: args.maxsize,
      stop: settled,
      warn: (line) => this.log(`${cmd.label}: ${line}`),
    }).then(
      () => undefined,
      (e) => {
        if (e instanceof ConnectionLostError || cmd.dead) return;
        cmd.failure = `download from Buildbot failed: ${errorText(e)}`;
        this.log(`${cmd.label}: ${cmd.failure}; interrupting the agent's command`);
        this.interruptAgent(cmd, cmd.failure);
      },
    );
  }

  // ---------------------------------------------------------------- completion

  private async finish(cmd: ActiveCommand, failure: string | null): Promise<void> {
    try {
      this.flushLines(cmd);
      this.flushNow(cmd);
      await cmd.writerChain.catch(() => undefined);
      await cmd.transfer.catch(() => undefined);
      while (cmd.acks.size > 0) await Promise.all([...cmd.acks]);
      const peer = this.peer;
      if (cmd.dead || !peer || !peer.isOpen) return;
      cmd.dead = true;
      const text = failure ?? cmd.failure;
      if (text) this.log(`${cmd.label} failed: ${text}`);
      try {
        await peer.request('complete', { command_id: cmd.wireId, args: text });
      } catch (e) {
        if (!(e instanceof ConnectionLostError)) this.log(`Buildbot rejected the completion of ${cmd.label}: ${errorText(e)}`);
      }
    } finally {
      this.killOutput(cmd);
      this.commands.delete(cmd.key);
    }
  }
}
