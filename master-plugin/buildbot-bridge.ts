/**
 * The Buildbot bridge: for one connected Tether agent, a worker connection to a
 * real Buildbot master over Buildbot's msgpack worker protocol
 * ('msgpack_experimental_v7'), so that to Buildbot the agent is an ordinary worker.
 *
 * The parts, one job each:
 * - buildbot-connection.ts: the WebSocket, auth, pings and the close;
 * - buildbot-url.ts: where the login (the worker's secret) may go;
 * - buildbot-dispatch.ts: the master's requests, checked and answered;
 * - buildbot-command.ts: one command (BuildbotCommand), its sink and 'complete';
 * - buildbot-output.ts, buildbot-lines.ts, buildbot-updates.ts: output into
 *   whole lines, shaped into updates as buildbot-worker's buffer_manager does,
 *   sent under a window of unacknowledged bytes;
 * - buildbot-transfer.ts: uploads and downloads;
 * - buildbot-protocol.ts: the protocol's facts and its request/response layer.
 *
 * This file ties them together: the bridge's life (start, close, the agent's
 * session ending) and its running commands. When the connection goes, every
 * running command is interrupted on the agent and its output dropped.
 */
import type { RemoteAgent } from './remote';
import { BuildbotCommand } from './buildbot-command';
import { BuildbotConnection } from './buildbot-connection';
import { BuildbotDispatch, type StartRequest } from './buildbot-dispatch';
import { UpdateWindow } from './buildbot-output';
import { errorText } from './buildbot-protocol';
import { printableLog } from '../wire/printable';

export interface BridgeOptions {
  /** ws://host:port (loopback only) or wss://host:port of the master's msgpack_experimental_v7 port (a path is kept; default '/'). */
  buildbotUrl: string;
  /** wss: the CA bundle or pinned certificate (PEM) to trust (default: Node's CAs). */
  buildbotCa?: Buffer;
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
   * The same while output streams (the last update went out less than this
   * long ago): lines then gather into fewer, bigger updates, each of which
   * costs the master the same (default 50).
   */
  streamingFlushDelayMs?: number;
  /** Unacknowledged update bytes above which the sink pushes back on the agent (default 1 MiB). */
  maxUnackedBytes?: number;
  /** Largest message accepted from Buildbot (default 16 MiB). */
  maxPayload?: number;
}

export class BuildbotBridge {
  readonly closed: Promise<void>;
  /** Why the connection ended (set once `closed` resolved). */
  closeReason: string | null = null;

  private readonly log: (line: string) => void;
  private readonly flushDelayMs: number;
  private readonly streamingFlushDelayMs: number;
  private readonly connection: BuildbotConnection;
  private readonly dispatch: BuildbotDispatch;
  private readonly window: UpdateWindow;
  private readonly commands = new Map<string, BuildbotCommand>();
  private startPromise: Promise<void> | null = null;
  private resolveClosed!: () => void;
  private agentGone = false;

  constructor(
    private readonly agent: RemoteAgent,
    opts: BridgeOptions,
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
    this.flushDelayMs = Math.max(0, opts.flushDelayMs ?? 5);
    this.streamingFlushDelayMs = Math.max(this.flushDelayMs, opts.streamingFlushDelayMs ?? 50);
    this.window = new UpdateWindow(Math.max(1024, opts.maxUnackedBytes ?? 1024 * 1024));
    this.dispatch = new BuildbotDispatch({
      agent,
      log: this.log,
      accept: () => this.connection.accept(),
      start: (request) => this.startCommand(request),
      isRunning: (key) => this.commands.has(key),
      interrupt: (key, why) => this.interruptCommand(key, why),
    });
    this.connection = new BuildbotConnection({
      url: opts.buildbotUrl,
      ca: opts.buildbotCa,
      workerName: opts.workerName,
      password: opts.password,
      connectTimeoutMs: opts.connectTimeoutMs ?? 30_000,
      pingIntervalMs: opts.pingIntervalMs ?? 30_000,
      maxPayload: opts.maxPayload ?? 16 * 1024 * 1024,
      log: this.log,
      handle: (op, msg) => this.dispatch.handle(op, msg),
      onClosed: (reason) => this.onClosed(reason),
    });
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
    if (!this.startPromise) {
      const gone = this.agentGone && !this.connection.isClosing;
      this.startPromise = gone ? Promise.reject(new Error('agent session already ended')) : this.connection.open();
    }
    return this.startPromise;
  }

  /** Disconnects from Buildbot (running commands are interrupted); resolves with `closed`. */
  async close(): Promise<void> {
    this.shutdown('closed by tether-master');
    await this.closed;
  }

  private shutdown(reason: string): void {
    if (this.closeReason !== null) return;
    for (const cmd of this.commands.values()) cmd.interruptAgent(`Buildbot connection closing: ${reason}`);
    this.connection.close(reason);
  }

  private onAgentClosed(): void {
    this.agentGone = true;
    if (this.closeReason !== null) return;
    this.log('agent session ended; disconnecting the worker from Buildbot');
    this.shutdown('agent session ended');
  }

  private onClosed(reason: string): void {
    this.closeReason = reason;
    for (const cmd of this.commands.values()) {
      cmd.interruptAgent(`Buildbot connection lost: ${reason}`);
      cmd.output.stop();
    }
    this.window.close();
    this.resolveClosed();
  }

  private startCommand(request: StartRequest): void {
    const peer = this.connection.peer!;
    const cmd = new BuildbotCommand(request, {
      peer,
      settings: this.dispatch.settings,
      window: this.window,
      flushDelayMs: this.flushDelayMs,
      streamingFlushDelayMs: this.streamingFlushDelayMs,
      log: this.log,
    });
    const { key, name, args } = request;
    this.commands.set(key, cmd);
    let remote;
    try {
      remote = this.agent.run(name, args, cmd.sink);
    } catch (e) {
      this.commands.delete(key);
      cmd.output.stop();
      this.log(`could not start ${cmd.label} on the agent: ${errorText(e)}`);
      throw new Error(`could not start ${name} on the tether agent: ${errorText(e)}`);
    }
    const where =
      name === 'shell' && typeof args.workdir === 'string' ? ` in ${args.workdir}` : typeof args.path === 'string' ? ` on ${args.path}` : '';
    this.log(`started ${cmd.label}${where}`);
    void cmd.started(remote).finally(() => this.commands.delete(key));
  }

  private interruptCommand(key: string, why: string): void {
    const cmd = this.commands.get(key);
    if (!cmd || cmd.dead || !cmd.remote) {
      this.log(`asked to interrupt command ${key} (${why}), but none was running`);
      return;
    }
    this.log(`interrupting ${cmd.label}: ${why}`);
    cmd.interrupt(why);
  }
}
