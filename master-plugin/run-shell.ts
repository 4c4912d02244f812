/**
 * runShell: one shell command on an agent, as an async iterable of output
 * plus a promise of its exit status. Built on RemoteAgent.run('shell', ...)
 * with the arguments Buildbot's ShellCommand sends, so it runs exactly what a
 * Buildbot step would.
 */
import { inspect } from 'node:util';
import { printable } from '../wire/printable';
import type { CommandSink, RemoteAgent, RemoteCommand } from './remote';

export interface ShellOptions {
  /** Directory to run in, relative to the agent's basedir (created if missing). Default '.'. */
  workdir?: string;
  /** Variables added to the agent's environment; null removes one, a list is joined with ':'. */
  env?: Record<string, string | string[] | null>;
  /** Kill the command after this many seconds without output (Buildbot's timeout). Default: never. */
  timeout?: number | null;
  /** Kill the command after this many seconds in all (Buildbot's maxTime). Default: never. */
  maxTime?: number | null;
  /** When set, SIGTERM first and the interrupt signal this many seconds later. */
  sigtermTime?: number | null;
  /** Signal an interrupt sends (default 'KILL', to the command's whole process group). */
  interruptSignal?: string;
  /** Feed what write() sends to the command's stdin until end(); otherwise stdin is closed at once. */
  stdin?: boolean;
  /** Bytes to write to stdin first (Buildbot's initial_stdin). */
  initialStdin?: string | Buffer;
  /**
   * Receive output here instead of through `output` (which then yields
   * nothing). A returned promise holds the command back until it settles.
   */
  onOutput?: (chunk: OutputChunk) => void | Promise<void>;
  /** Header lines of the agent (the command line, "elapsedTime=...", kill notices). */
  onHeader?: (text: string) => void;
  /** Unread bytes that may wait in `output` before the agent is held back. Default 1 MiB. */
  highWaterMark?: number;
}

export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  data: Buffer;
}

export interface ShellResult {
  /** The exit code, 0 to 255; -1 when the process was killed by a signal, or with a failure. */
  rc: number;
  /** The signal that killed the process (1 to 127), when one did. */
  signal?: number;
  /** Seconds the process ran, as the agent measured it. */
  elapsed?: number;
  /**
   * Set when the agent could not run the command to the end (Buildbot's step
   * exception), or when its result was none (code BAD_RESULT: see
   * checkedResult). The message is printable (wire/printable.ts).
   */
  failure?: { code: string; message: string };
}

/** The failure code of a result the agent got wrong; never one of the agent's own codes, which are wire error names. */
export const BAD_RESULT = 'BAD_RESULT';

export interface RemoteShell {
  /**
   * stdout and stderr, in the order the agent sent them. Iterate it (or pass
   * onOutput): once highWaterMark bytes wait unread, the agent is held back.
   * Ends when the command does; throws if the agent's connection is lost.
   */
  readonly output: AsyncIterable<OutputChunk>;
  /** Settles once the command has ended and all output was delivered. Rejects if the link to the agent is lost. */
  readonly result: Promise<ShellResult>;
  /** The underlying command stream. */
  readonly command: RemoteCommand;
  /** Writes to the command's stdin (needs `stdin: true`); resolves when flow control allows more. */
  write(data: Buffer | string): Promise<void>;
  /** Closes the command's stdin. */
  end(): Promise<void>;
  /** Kills the command's process tree (interruptSignal, default KILL); result still settles. */
  interrupt(why?: string): void;
}

/** The exit status a local shell would report: rc, or 128+N after signal N; 255 for a failure, as ssh's. */
export function exitStatus(result: ShellResult): number {
  if (result.failure) return 255;
  return result.signal === undefined ? result.rc : 128 + result.signal;
}

const DEFAULT_HIGH_WATER = 1024 * 1024;

/** A single-consumer queue of output chunks that tells the producer when to wait. */
class OutputQueue implements AsyncIterable<OutputChunk> {
  private readonly items: OutputChunk[] = [];
  private bytes = 0;
  private ended = false;
  private error: Error | null = null;
  private wakeReader: (() => void) | null = null;
  private readonly drainWaiters: Array<() => void> = [];
  /** The reader stopped iterating: output is dropped from then on, so the command can finish. */
  private abandoned = false;

  constructor(private readonly highWater: number) {}

  push(chunk: OutputChunk): Promise<void> | void {
    if (this.abandoned) return;
    this.items.push(chunk);
    this.bytes += chunk.data.length;
    this.wake();
    if (this.bytes <= this.highWater) return;
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  end(error: Error | null = null): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error;
    this.wake();
  }

  private wake(): void {
    const w = this.wakeReader;
    this.wakeReader = null;
    w?.();
  }

  private take(): OutputChunk {
    const chunk = this.items.shift() as OutputChunk;
    this.bytes -= chunk.data.length;
    if (this.bytes <= this.highWater) for (const resolve of this.drainWaiters.splice(0)) resolve();
    return chunk;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<OutputChunk> {
    try {
      for (;;) {
        if (this.items.length) {
          yield this.take();
          continue;
        }
        if (this.ended) {
          if (this.error) throw this.error;
          return;
        }
        await new Promise<void>((resolve) => (this.wakeReader = resolve));
      }
    } finally {
      if (!this.ended) {
        this.abandoned = true;
        this.items.length = 0;
        this.bytes = 0;
        for (const resolve of this.drainWaiters.splice(0)) resolve();
      }
    }
  }
}

/** A header of its own (a command line may quote this text too). */
const KILLED_BY = /^process killed by signal (\d+)\n?$/;
const ELAPSED = /^elapsedTime=([0-9.]+)/m;
/** The largest signal number N whose 128+N is still an exit status. */
const MAX_SIGNAL = 127;

/**
 * The agent's rc and "process killed by signal N" header as a result, as
 * PROTOCOL.md section 9.1 says: rc 0 to 255 without that header is an exit
 * code; rc -1 after it, with N from 1 to 127, a death by signal N. Anything
 * else (an rc that is no integer or out of range, none at all, -1 without the
 * header, the header with another rc or naming no signal) is a failure of
 * the agent, BAD_RESULT: a broken or hostile agent cannot make an exit
 * status that is none (NaN, 1.5, 300), nor pass its mistake off as the
 * command's.
 */
function checkedResult(rc: { value: unknown } | null, killedBy: string | undefined): ShellResult {
  const bad = (why: string): ShellResult => ({ rc: -1, failure: { code: BAD_RESULT, message: printable(why) } });
  const signal = killedBy === undefined ? undefined : Number(killedBy);
  if (signal !== undefined && !(signal >= 1 && signal <= MAX_SIGNAL)) {
    return bad(`"process killed by signal ${killedBy}" names no signal (1 to ${MAX_SIGNAL})`);
  }
  if (rc === null) return bad('no rc before the command ended');
  const code = rc.value;
  if (typeof code !== 'number' || !Number.isInteger(code) || code < -1 || code > 255) {
    const shown = inspect(code, { breakLength: Infinity, depth: 1, maxArrayLength: 4, maxStringLength: 40 });
    return bad(`rc ${shown} is not an exit code (0 to 255, or -1 after "process killed by signal N")`);
  }
  if (signal === undefined) return code === -1 ? bad('rc -1 (killed) without a "process killed by signal N" header') : { rc: code };
  return code === -1 ? { rc: -1, signal } : bad(`rc ${code} after "process killed by signal ${signal}": a killed process has rc -1`);
}

/** The arguments Buildbot's ShellCommand sends, for `command` and the options. */
export function shellArgs(command: string | string[], opts: ShellOptions = {}): Record<string, unknown> {
  const args: Record<string, unknown> = {
    command,
    workdir: opts.workdir ?? '.',
    env: opts.env ?? {},
    want_stdout: true,
    want_stderr: true,
    timeout: opts.timeout ?? null,
    maxTime: opts.maxTime ?? null,
    usePTY: false,
    logEnviron: false,
    logfiles: {},
  };
  if (opts.sigtermTime != null) args.sigtermTime = opts.sigtermTime;
  if (opts.interruptSignal) args.interruptSignal = opts.interruptSignal;
  if (opts.initialStdin !== undefined) args.initial_stdin = opts.initialStdin;
  if (opts.stdin) args.stdin = true;
  return args;
}

/**
 * Runs `command` on the agent: a string goes to /bin/sh -c, a list is the
 * argv (no shell). See ShellOptions for the rest.
 */
export function runShell(agent: RemoteAgent, command: string | string[], opts: ShellOptions = {}): RemoteShell {
  if (typeof command !== 'string' && (!Array.isArray(command) || command.length === 0)) {
    throw new TypeError('runShell: command must be a string or a non-empty list of strings');
  }
  const queue = new OutputQueue(opts.highWaterMark ?? DEFAULT_HIGH_WATER);
  let callbackError: unknown = null;
  let command_: RemoteCommand | undefined;
  const onOutput = opts.onOutput;
  const deliver = onOutput
    ? async (chunk: OutputChunk) => {
        if (callbackError !== null) return;
        try {
          await onOutput(chunk);
        } catch (error) {
          // a failing callback stops the command, not the agent's whole connection
          callbackError = error;
          command_?.interrupt('the output callback failed');
        }
      }
    : (chunk: OutputChunk) => queue.push(chunk);
  let rc: { value: unknown } | null = null;
  let killedBy: string | undefined;
  let elapsed: number | undefined;
  const sink: CommandSink = {
    stdout: (data) => deliver({ stream: 'stdout', data }),
    stderr: (data) => deliver({ stream: 'stderr', data }),
    header: (text) => {
      const killed = KILLED_BY.exec(text);
      if (killed) killedBy = killed[1];
      const time = ELAPSED.exec(text);
      if (time) elapsed = Number(time[1]);
      opts.onHeader?.(text);
    },
    update: (key, value) => {
      if (key === 'rc') rc = { value };
    },
  };
  const started = agent.run('shell', shellArgs(command, opts), sink);
  command_ = started;
  const result = started.result.then(
    (r): ShellResult => {
      queue.end();
      if (callbackError !== null) throw callbackError;
      const out: ShellResult = r.failure ? { rc: -1, failure: r.failure } : checkedResult(rc, killedBy);
      if (elapsed !== undefined) out.elapsed = elapsed;
      return out;
    },
    (error: Error) => {
      queue.end(error);
      throw error;
    },
  );
  result.catch(() => undefined); // the caller may only iterate output; it throws there too
  return {
    output: queue,
    result,
    command: started,
    write: (data) => started.writeStdin(typeof data === 'string' ? Buffer.from(data) : data),
    end: () => started.writeStdin(null),
    interrupt: (why = 'interrupted') => started.interrupt(why),
  };
}

/** Describes a result for people: "exit code 3", "killed by signal 15", or the failure. */
export function describeResult(result: ShellResult): string {
  if (result.failure) return `failed: ${result.failure.message}`;
  if (result.signal !== undefined) return `killed by signal ${result.signal}`;
  return `exit code ${result.rc}`;
}
