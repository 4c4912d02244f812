/**
 * A command's output to Buildbot (CommandOutput): the agent's log bytes become
 * whole lines (LogLines, buildbot-lines.ts), lines and values become 'update'
 * messages shaped by the buffer_manager port (buildbot-updates.ts), and each
 * message is sent and tracked until Buildbot acknowledges it.
 *
 * - Timer: an update waits at most flushDelayMs after a quiet spell, and
 *   streamingFlushDelayMs while output streams (the last update went out less
 *   than that long ago), not Buildbot's buffer_timeout (5 s): a line shows at
 *   once, and streaming output still fills whole updates of buffer_size.
 *   While the master is behind (the window holds the agent back and
 *   acknowledgements are to come), the timer waits for it to catch up: a
 *   part-filled update then would only add to Buildbot's work (each update
 *   costs it a database transaction), where buildbot-worker, which has no
 *   window, would have filled it.
 * - Partial lines: a trailing partial line is held (at most max_line_length
 *   characters per log) until its newline, the 'rc' update, an interrupt or
 *   the end of the command (flushLines), where '\n' is added, as buildbot-worker does.
 * - Flow control (UpdateWindow, one per connection): while more than
 *   maxUnackedBytes of updates are buffered or unacknowledged over all
 *   commands, every sink call returns a promise, so a slow master slows the
 *   agent; it resolves once that is down to half. Lines count as
 *   buffer_manager counts them, values as their msgpack size.
 */
import { encode } from '@msgpack/msgpack';
import { type LineInfo, LogLines } from './buildbot-lines';
import { ConnectionLostError, errorText } from './buildbot-protocol';
import type { WorkerSettings } from './buildbot-dispatch';
import { BufferManager, type Update, type UpdateTimers, updateSize } from './buildbot-updates';

/** The update keys whose data is lines, and the logs they are (a logfile is 'log:' and its name). */
const LINE_KEYS = new Set(['stdout', 'stderr', 'header']);

export class UpdateWindow {
  /** Buffered and unacknowledged. */
  private bytes = 0;
  private unacked = 0;
  private waiters: Array<() => void> = [];
  private open = true;

  constructor(private readonly maxBytes: number) {}

  /** Bytes buffered. */
  add(n: number): void {
    this.bytes += n;
  }

  /** Buffered bytes sent to Buildbot. */
  sent(n: number): void {
    this.unacked += n;
  }

  /** Sent bytes acknowledged (or lost with the connection). */
  acked(n: number): void {
    this.unacked -= n;
    this.remove(n);
  }

  /** Bytes gone: acknowledged, or buffered and dropped. */
  remove(n: number): void {
    this.bytes -= n;
    if (this.waiters.length > 0 && this.bytes <= this.maxBytes / 2) this.releaseWaiters();
  }

  /**
   * The master is behind: the agent is held back (the window is full, or has
   * not drained to half since it was) and acknowledgements are to come, which
   * will open it.
   */
  get behind(): boolean {
    return this.open && this.unacked > 0 && (this.bytes > this.maxBytes || this.waiters.length > 0);
  }

  /** A promise while the window is full (undefined otherwise). */
  wait(): void | Promise<void> {
    if (this.bytes <= this.maxBytes || !this.open) return;
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** The connection is gone: nothing waits any more. */
  close(): void {
    this.open = false;
    this.releaseWaiters();
  }

  private releaseWaiters(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }
}

export interface OutputOptions {
  settings: WorkerSettings;
  window: UpdateWindow;
  flushDelayMs: number;
  streamingFlushDelayMs: number;
  /** Sends one 'update' with these args; resolves when Buildbot acknowledged it. */
  send(args: Update[]): Promise<unknown>;
  /** The command, as the bridge names it in its log. */
  label: string;
  log(line: string): void;
}

/** The bytes an update holds in the window: buffer_manager's count for lines, the msgpack size for a value. */
function windowBytes(key: string, data: unknown): number {
  if (key === 'log' || LINE_KEYS.has(key)) return updateSize(key, data);
  try {
    return Math.max(20, encode(data).length);
  } catch {
    return 20; // unencodable values fail when sent
  }
}

export class CommandOutput {
  /** No more output is taken (the command finished or the connection is gone). */
  stopped = false;
  private readonly lines: LogLines;
  private readonly updates: BufferManager;
  /** Window bytes appended to `updates` and not sent yet. */
  private buffered = 0;
  private lastSentAt = 0;
  private readonly acks = new Set<Promise<void>>();

  constructor(private readonly opts: OutputOptions) {
    const { settings, flushDelayMs, streamingFlushDelayMs } = opts;
    this.lines = new LogLines(settings.newlineRe, settings.maxLineLength);
    const timeout = (): number => (Date.now() - this.lastSentAt < streamingFlushDelayMs ? streamingFlushDelayMs : flushDelayMs);
    this.updates = new BufferManager((message) => this.send(message), settings.bufferSize, timeout, this.timersWaitingForMaster());
  }

  /** Output of a log: 'stdout', 'stderr', 'header', or a logfile's (key 'log' and its name). */
  output(key: string, logname: string | undefined, chunk: Buffer | string): void | Promise<void> {
    if (this.stopped) return;
    const log = key === 'log' ? `log:${logname ?? ''}` : key;
    this.lines.append(log, chunk, Date.now() / 1000, (info) => this.appendLines(log, info));
    return this.opts.window.wait();
  }

  /** An update from the agent: output by another name, or a value (rc, elapsed, stat ...). */
  update(key: string, value: unknown): void | Promise<void> {
    if (this.stopped) return;
    if (LINE_KEYS.has(key) && (typeof value === 'string' || Buffer.isBuffer(value))) return this.output(key, undefined, value);
    if (key === 'log' && Array.isArray(value) && value.length === 2 && typeof value[0] === 'string') {
      const data = value[1];
      if (typeof data === 'string' || Buffer.isBuffer(data)) return this.output('log', value[0], data);
    }
    // The exit code ends the output: held partial lines go before Buildbot prints "program finished".
    if (key === 'rc') this.flushLines();
    this.append(key, value);
    return this.opts.window.wait();
  }

  /** Takes every held partial line (with '\n' added) and half character (as U+FFFD). */
  flushLines(): void {
    if (this.stopped) return;
    this.lines.flush(Date.now() / 1000, (log, info) => this.appendLines(log, info));
  }

  /** Sends what is buffered. */
  flush(): void {
    if (!this.stopped) this.updates.flush();
  }

  /** Resolves once Buildbot acknowledged every update sent so far (or the connection is gone). */
  async acknowledged(): Promise<void> {
    while (this.acks.size > 0) await Promise.all([...this.acks]);
  }

  /** Takes no more output and drops what is buffered. */
  stop(): void {
    this.stopped = true;
    this.updates.discard();
    this.opts.window.remove(this.buffered);
    this.buffered = 0;
  }

  /** Timers that fire only while the master is not behind (else they wait as long again). */
  private timersWaitingForMaster(): UpdateTimers {
    const { window } = this.opts;
    type Held = { timer?: NodeJS.Timeout };
    return {
      set: (fn, ms) => {
        const held: Held = {};
        const fire = (): void => {
          if (window.behind && !this.stopped) held.timer = setTimeout(fire, ms);
          else fn();
        };
        held.timer = setTimeout(fire, ms);
        return held;
      },
      clear: (held) => clearTimeout((held as Held).timer),
    };
  }

  private appendLines(log: string, info: LineInfo): void {
    if (log.startsWith('log:')) this.append('log', [log.slice(4), info]);
    else this.append(log, info);
  }

  private append(key: string, data: unknown): void {
    const n = windowBytes(key, data);
    this.buffered += n;
    this.opts.window.add(n);
    this.updates.append(key, data);
  }

  private send(message: Update[]): void {
    let bytes = 0;
    for (const [key, data] of message) bytes += windowBytes(key, data);
    this.buffered -= bytes;
    this.opts.window.sent(bytes);
    this.lastSentAt = Date.now();
    const ack: Promise<void> = this.opts.send(message).then(
      () => undefined,
      (e) => {
        if (!(e instanceof ConnectionLostError)) this.opts.log(`Buildbot rejected an update of ${this.opts.label}: ${errorText(e)}`);
      },
    );
    const tracked = ack.finally(() => {
      this.acks.delete(tracked);
      this.opts.window.acked(bytes);
    });
    this.acks.add(tracked);
  }
}
