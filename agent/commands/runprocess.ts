/**
 * buildbot_worker/runprocess.py's RunProcess: runs one child process for the
 * shell, rmdir and cpdir commands and reports it the way buildbot-worker does.
 *
 * Updates, in order (texts as runprocess writes them):
 *   header  "WARNING: disabling usePTY for this command"   (usePTY with stdin; no newline, sic)
 *   header  "<command line>\n"                      (argv shell-quoted, or the string)
 *   header  " in dir <workdir> (timeout N secs) (maxTime N secs)\n"
 *   header  " watching logfiles {<python repr>}\n"
 *   header  " argv: [b'...', ...]\n"                (python repr of the byte strings)
 *   header  " environment:\n  K=V\n..."             (when logEnviron, sorted)
 *   header  " writing N bytes to stdin\n"           (when initial_stdin)
 *   header  " using PTY: True|False\n"
 *   stdout / stderr / log (raw bytes)
 *   header  "\ncommand timed out: N seconds without output running <argv repr>, attempting to kill\n"
 *   header  "\ncommand timed out: N seconds elapsed running <argv repr>, attempting to kill\n"
 *   header  "\ncommand interrupted, attempting to kill\n"
 *   header  "process killed by signal N\n"          (sendRC only)
 *   rc      exit code; -1 when killed by a signal, or when we killed it and it still exited 0
 *   header  "elapsedTime=S.SSSSSS\n"
 * ("program finished with exit code N" is written by the master on 'rc', not by the worker.)
 *
 * The child's environment: process-env.ts. Process handling: the child leads
 * a process group of its own, signalled and killed as process-group.ts says
 * (SIGTERM first when sigtermTime is set, then the interrupt signal, default
 * KILL); the pipes are then closed and if the process has not ended
 * BACKUP_TIMEOUT (5) seconds later the command fails ("SIGKILL failed to
 * kill process", fake rc=-1). Completion
 * waits for the exit and for stdout/stderr to close, as twisted's
 * processEnded does (a background grandchild holding the pipe keeps the
 * command running, until a timeout kills the group). While the leader runs,
 * its group is recorded under the basedir, for the next agent to kill should
 * this one be killed (orphans.ts).
 *
 * Flow control: a pipe's next chunk is read only once io.stdout/stderr/log
 * resolved for the previous one, so a slow master slows the child (blocked
 * on a full pipe) instead of growing a buffer. While output waits for credit
 * the no-output timeout is suspended (it measures the command's silence, not
 * the master's); maxTime keeps running.
 *
 * Where this differs from buildbot-worker 3.7 (see also process-group.ts):
 *  - a program that cannot be executed: twisted's child prints a Python
 *    traceback and exits 1; here stderr gets its first and last lines
 *    ("Upon execvpe b'prog' [b'prog', ...] in environment id 0\n:FileNotFoundError:
 *    [Errno 2] No such file or directory: b'prog'\n", argv words as the fake
 *    ones of obfuscated arguments) and rc is 1;
 *  - usePTY: see startCommand (script(1) stands in for twisted's PTY);
 *  - arguments and environment go to the child as UTF-8 text (Node's spawn
 *    takes strings), so argv bytes that are not UTF-8 cannot be passed;
 *  - stdio: stdout and stderr are pipes (child-pipes.ts), as twisted's; stdin
 *    is /dev/null when nothing is written to it, and otherwise Node's
 *    socketpair, which cannot be reopened as /dev/stdin (twisted: a pipe).
 */
import { spawn, type ChildProcess } from 'child_process';
import * as os from 'os';
import type { Readable, Writable } from 'stream';
import type { CommandIO } from './command';
import { CommandFailure } from './command';
import { LogFileWatcher } from './logwatcher';
import { type LongTimeout, longTimeout } from '../../wire/long-timeout';
import { toPyOSError } from './oserror';
import { isDir, makedirs, pathJoin, which } from './paths';
import { processEnviron } from './process-env';
import { type OutputPipes, type OutputStreams, openOutputPipes } from './child-pipes';
import { ProcessGroup } from './process-group';
import { pyRepr, pyStr, pyTypeName, reprBytes, reprStr, shQuote, shellQuote } from './pyrepr';

export interface RunProcessOptions {
  /** A string (run with /bin/sh -c) or an argv list; list items may be ['obfuscated', real, fake]. */
  command: unknown;
  workdir: string;
  environ?: unknown;
  sendStdout?: boolean;
  sendStderr?: boolean;
  sendRC?: boolean;
  timeout?: number | null;
  maxTime?: number | null;
  sigtermTime?: number | null;
  initialStdin?: unknown;
  /** Feed io.readStdin() to the child's stdin until it returns null (after initialStdin). */
  feedStdin?: boolean;
  logEnviron?: boolean;
  logfiles?: unknown;
  usePTY?: unknown;
  interruptSignal?: string;
}

type Word = Buffer | unknown;

/** The agent's ends of the child's stdio (stdin null: the child reads /dev/null). */
interface ChildStdio extends OutputStreams {
  stdin: Writable | null;
}

function toBytes(value: unknown): Word {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return Buffer.from(value);
  return value;
}

function isObfuscated(w: unknown): w is [string, unknown, unknown] {
  return Array.isArray(w) && w.length === 3 && w[0] === 'obfuscated';
}

export class RunProcess {
  /** Seconds to wait, after the kill signal, for the process to end before giving up. */
  static BACKUP_TIMEOUT = 5;

  interruptSignal = 'KILL';

  private readonly real: Word[] | Word;
  private readonly fake: Word[] | Word;
  private readonly isList: boolean;
  private readonly environ: Record<string, string>;
  private readonly sendStdout: boolean;
  private readonly sendStderr: boolean;
  private readonly sendRC: boolean;
  private readonly timeout: number | null;
  private readonly maxTime: number | null;
  private readonly sigtermTime: number | null;
  private readonly initialStdin: Buffer | null;
  private readonly feedStdin: boolean;
  private readonly logEnviron: boolean;
  private readonly logfiles: unknown;
  private usePTY: boolean;
  private readonly watchers: LogFileWatcher[] = [];

  private stdio: ChildStdio | null = null;
  private group: ProcessGroup | null = null;
  /** kill()'s message when it came before the spawn. */
  private killBeforeSpawn: string | null = null;
  private startTime = 0;
  private killed = false;
  private ending = false;
  private settled = false;
  private resolveRC!: (rc: number) => void;
  private rejectRC!: (err: Error) => void;
  private readonly pending = new Set<Promise<void>>();

  private ioTimerArmed = false;
  private ioTimer: LongTimeout | null = null;
  private holds = 0;
  private maxTimer: LongTimeout | null = null;
  private killTimer: LongTimeout | null = null;

  constructor(
    private readonly io: CommandIO,
    readonly workdir: string,
    opts: Omit<RunProcessOptions, 'workdir'>,
  ) {
    const command = opts.command;
    if (Array.isArray(command)) {
      this.isList = true;
      this.real = command.map((w) => toBytes(isObfuscated(w) ? w[1] : w));
      this.fake = command.map((w) => toBytes(isObfuscated(w) ? w[2] : w));
    } else {
      this.isList = false;
      this.real = toBytes(command);
      this.fake = this.real;
    }
    this.sendStdout = opts.sendStdout ?? true;
    this.sendStderr = opts.sendStderr ?? true;
    this.sendRC = opts.sendRC ?? true;
    this.logfiles = opts.logfiles ?? {};
    if (!isDir(workdir)) makedirs(workdir);
    this.environ = processEnviron(opts.environ, workdir);
    const stdin = opts.initialStdin;
    this.initialStdin =
      stdin === null || stdin === undefined ? null : (toBytes(stdin) as Buffer);
    if (this.initialStdin !== null && !Buffer.isBuffer(this.initialStdin)) {
      throw new CommandFailure("TypeError: 'initial_stdin' must be str or bytes");
    }
    this.feedStdin = opts.feedStdin ?? false;
    this.logEnviron = opts.logEnviron ?? true;
    this.timeout = opts.timeout ?? null;
    this.maxTime = opts.maxTime ?? null;
    this.sigtermTime = opts.sigtermTime ?? null;
    if (opts.interruptSignal) this.interruptSignal = opts.interruptSignal;

    const usePTY = opts.usePTY ?? false;
    if (usePTY !== true && usePTY !== false && usePTY !== 0 && usePTY !== 1) {
      throw new CommandFailure(
        `AssertionError: Unexpected usePTY argument value: ${pyRepr(usePTY)}. Expected boolean.`,
      );
    }
    this.usePTY = Boolean(usePTY);
    // for the stdin to be closable it must be a pipe, not a PTY
    if ((stdin !== null && stdin !== undefined) || this.feedStdin) {
      if (this.usePTY) this.hdr('WARNING: disabling usePTY for this command');
      this.usePTY = false;
    }

    const logfiles = this.logfiles;
    if (logfiles && typeof logfiles === 'object') {
      for (const [name, value] of Object.entries(logfiles as Record<string, unknown>)) {
        let filename = value;
        let follow = false;
        if (value && typeof value === 'object' && !(value instanceof Uint8Array)) {
          const opt = value as Record<string, unknown>;
          if (!('filename' in opt)) throw new CommandFailure("KeyError: 'filename'");
          filename = opt.filename;
          follow = Boolean(opt.follow ?? false);
        }
        if (typeof filename !== 'string') {
          throw new CommandFailure(`TypeError: logfile ${reprStr(name)} must name a file`);
        }
        this.watchers.push(
          new LogFileWatcher(
            { addLogfile: (n, data) => this.addOutput(() => this.io.log(n, data)) },
            name,
            pathJoin(workdir, filename),
            follow,
          ),
        );
      }
    }
  }

  /** The argv (or command string) as runprocess reprs it in headers: fake_command. */
  get fakeCommandRepr(): string {
    return pyRepr(this.fake);
  }

  /** Runs the process; resolves with its rc. Rejects as RunProcess's deferred errbacks. */
  async start(): Promise<number> {
    const done = new Promise<number>((resolve, reject) => {
      this.resolveRC = resolve;
      this.rejectRC = reject;
    });
    try {
      this.startCommand(await openOutputPipes());
    } catch (err) {
      const text = err instanceof Error ? err.message : String(err);
      this.settled = true;
      this.cancelTimers();
      await this.addOutput(() =>
        this.io.stderr(Buffer.from(`error in RunProcess._startCommand (${text})\n`)),
      );
      if (err instanceof Error && err.stack) {
        const stack = err.stack;
        await this.addOutput(() => this.io.stderr(Buffer.from(stack + '\n')));
      }
      // "pretend it was a shell error"
      throw new CommandFailure(`AbandonChain: (-1, 'Got exception (${text})')`);
    }
    return done;
  }

  private words(list: Word[]): string[] {
    return list.map((w) => {
      if (Buffer.isBuffer(w)) return w.toString('utf8');
      throw new TypeError(`expected str, bytes or os.PathLike object, not ${pyTypeName(w)}`);
    });
  }

  /** `pipes`: the child's stdout and stderr (null: Node's socketpairs). */
  private startCommand(pipes: OutputPipes | null): void {
    if (!isDir(this.workdir)) makedirs(this.workdir);

    let argv: string[];
    let display: string;
    if (this.isList) {
      argv = this.words(this.real as Word[]);
      display = shellQuote(this.words(this.fake as Word[]));
    } else {
      const [cmd] = this.words([this.real]);
      [display] = this.words([this.fake]);
      argv = ['/bin/sh', '-c', cmd];
    }

    const header = (text: string) => this.hdr(text);
    header(display + '\n');
    let msg = ` in dir ${this.workdir}`;
    if (this.timeout) msg += ` (timeout ${pyStr(this.timeout)} ${this.timeout === 1 ? 'sec' : 'secs'})`;
    if (this.maxTime) msg += ` (maxTime ${pyStr(this.maxTime)} ${this.maxTime === 1 ? 'sec' : 'secs'})`;
    header(msg + '\n');
    header(` watching logfiles ${pyRepr(this.logfiles)}\n`);
    header(` argv: ${this.fakeCommandRepr}\n`);
    if (this.logEnviron) {
      let env = ' environment:\n';
      for (const name of Object.keys(this.environ).sort()) env += `  ${name}=${this.environ[name]}\n`;
      header(env);
    }
    if (this.initialStdin && this.initialStdin.length) {
      header(` writing ${this.initialStdin.length} bytes to stdin\n`);
    }
    let spawnArgv = argv;
    if (this.usePTY) {
      // Node has no PTY: util-linux script(1) runs the command on one.
      const script = which('script', this.environ.PATH);
      if (script) {
        spawnArgv = [script, '-qfec', 'exec ' + argv.map(shQuote).join(' '), '/dev/null'];
      } else {
        this.usePTY = false;
        header('WARNING: usePTY requested, but this agent has no script(1) to provide a PTY\n');
      }
    }
    header(` using PTY: ${this.usePTY ? 'True' : 'False'}\n`);

    if (argv.length === 0) throw new IndexError('list index out of range'); // argv[0]
    this.startTime = performance.now();
    // stdin: a pipe only when something is written to it; otherwise /dev/null,
    // which reads as twisted's closed pipe does and, unlike a closed socket,
    // can be opened as /dev/stdin.
    const writesStdin = (this.initialStdin?.length ?? 0) > 0 || this.feedStdin;
    const stdinEnd = writesStdin ? 'pipe' : 'ignore';
    let child: ChildProcess;
    try {
      child = spawn(spawnArgv[0], spawnArgv.slice(1), {
        cwd: this.workdir,
        env: this.environ,
        detached: true,
        stdio: pipes ? [stdinEnd, ...pipes.childEnds] : [stdinEnd, 'pipe', 'pipe'],
      });
    } catch (err) {
      pipes?.close();
      throw err;
    }
    const stdio: ChildStdio = { stdin: child.stdin, ...(pipes?.agentEnds() ?? { stdout: child.stdout as Readable, stderr: child.stderr as Readable }) };
    this.stdio = stdio;
    this.group = new ProcessGroup(child, this.usePTY);
    if (child.pid !== undefined) {
      const forget = this.io.recordProcessGroup?.(child.pid, display);
      if (forget) child.once('exit', forget);
    }

    let spawnError: Error | null = null;
    child.on('error', (err) => {
      if (child.pid === undefined) spawnError = err;
    });
    // Ended once it has exited and stdout and stderr are closed, as twisted's
    // processEnded ('close' waits for them only when Node made them).
    const outputClosed = Promise.all([stdio.stdout, stdio.stderr].map((s) => s.closed || new Promise((resolve) => s.once('close', resolve))));
    child.on('close', (code, signal) => void outputClosed.then(() => {
      if (spawnError) {
        // twisted forks, the exec fails in the child, which writes this and exits 1
        void this.reportExecFailure(spawnError, argv);
        this.processEnded(null, 1);
        return;
      }
      const sig = signal ? (os.constants.signals as Record<string, number>)[signal] ?? -1 : null;
      this.processEnded(sig, code ?? -1);
    }));

    const stdin = stdio.stdin;
    if (stdin) {
      stdin.on('error', () => {
        // EPIPE: the child did not read its stdin
      });
      if (this.initialStdin && this.initialStdin.length) stdin.write(this.initialStdin);
      if (this.feedStdin) void this.pumpStdin(stdin);
      else stdin.end();
    }

    this.pipeOutput(stdio.stdout, (c) => this.io.stdout(c), this.sendStdout);
    this.pipeOutput(stdio.stderr, (c) => this.io.stderr(c), this.sendStderr);

    if (this.timeout) {
      this.ioTimerArmed = true;
      this.armIoTimer();
    }
    if (this.maxTime) {
      this.maxTimer = longTimeout(() => this.doMaxTimeout(), this.maxTime * 1000);
    }
    for (const w of this.watchers) w.start();
    if (this.killBeforeSpawn !== null) this.kill(this.killBeforeSpawn);
  }

  private async reportExecFailure(err: Error, argv: string[]): Promise<void> {
    if (!this.sendStderr) return;
    const py = toPyOSError(err);
    const argv0 = Buffer.from(argv[0]);
    const fakeArgv = this.isList ? pyRepr(this.fake) : pyRepr(argv.map((a) => Buffer.from(a)));
    const reason = py
      ? `${py.className}: [Errno ${py.errno}] ${py.strerror}: ${reprBytes(argv0)}`
      : `OSError: ${err.message}`;
    const text = `Upon execvpe ${reprBytes(argv0)} ${fakeArgv} in environment id 0\n:${reason}\n`;
    await this.addOutput(() => this.io.stderr(Buffer.from(text)));
  }

  private async pumpStdin(stdin: Writable): Promise<void> {
    try {
      for (;;) {
        const chunk = await this.io.readStdin();
        if (chunk === null || stdin.destroyed || this.ending) break;
        if (!stdin.write(chunk)) {
          await new Promise<void>((resolve) => {
            const done = () => {
              stdin.off('drain', done);
              stdin.off('close', done);
              resolve();
            };
            stdin.on('drain', done);
            stdin.on('close', done);
          });
        }
      }
    } catch {
      // the master's stdin went away: close the child's
    }
    if (!stdin.destroyed) stdin.end();
  }

  /** Sends one piece of output; the io timeout counts from when the master accepted it. */
  private addOutput(send: () => Promise<void>): Promise<void> {
    this.armIoTimer(); // output seen: reset the no-output timer
    this.holds++;
    this.clearIoTimer();
    const p = send()
      .catch(() => {
        // the update could not be delivered; buildbot-worker only logs that
      })
      .finally(() => {
        this.holds--;
        this.armIoTimer();
        this.pending.delete(p);
      });
    this.pending.add(p);
    return p;
  }

  /**
   * Reads one pipe chunk by chunk, each sent before the next is read. (An
   * async iterator rather than pause()/resume(): Node resumes a child's
   * pipes by itself when the child exits.)
   */
  private pipeOutput(stream: Readable, send: (c: Buffer) => Promise<void>, want: boolean): void {
    const pump = async () => {
      try {
        for await (const chunk of stream) {
          if (!want) this.armIoTimer(); // output seen, though not sent
          else await this.addOutput(() => send(chunk as Buffer));
        }
      } catch {
        // the pipe was closed by cleanUp()
      }
    };
    const p = pump().finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  /** send_update for a header: delivery failures are only logged by buildbot-worker. */
  private hdr(text: string): void {
    try {
      this.io.header(text);
    } catch {
      // the link is gone; the agent notices on its own
    }
  }

  private upd(key: string, value: unknown): void {
    try {
      this.io.update(key, value);
    } catch {
      // as hdr()
    }
  }

  private clearIoTimer(): void {
    this.ioTimer?.clear();
    this.ioTimer = null;
  }

  private armIoTimer(): void {
    this.clearIoTimer();
    if (this.ioTimerArmed && this.holds === 0 && this.timeout) {
      this.ioTimer = longTimeout(() => this.doTimeout(), this.timeout * 1000);
    }
  }

  private processEnded(sig: number | null, rc: number): void {
    if (this.killed && rc === 0) rc = -1; // killed, but exited 0: fake a failure
    void this.finished(sig, rc);
  }

  private async finished(sig: number | null, rc: number): Promise<void> {
    if (this.ending) return;
    this.ending = true;
    if (this.settled) return; // the backup timeout gave up on it already
    const elapsedTime = (performance.now() - this.startTime) / 1000;
    this.cancelTimers();
    while (this.pending.size) await Promise.all([...this.pending]);
    for (const w of this.watchers) await w.stop(); // sends the final updates
    while (this.pending.size) await Promise.all([...this.pending]);
    if (this.settled) return; // the backup timeout gave up on it already
    if (sig !== null) rc = -1;
    if (this.sendRC) {
      if (sig !== null) this.hdr(`process killed by signal ${sig}\n`);
      this.upd('rc', rc);
    }
    this.hdr(`elapsedTime=${elapsedTime.toFixed(6)}\n`);
    this.settled = true;
    this.resolveRC(rc);
  }

  private doTimeout(): void {
    this.ioTimer = null;
    this.ioTimerArmed = false;
    this.kill(
      `command timed out: ${pyStr(this.timeout)} seconds without output running ${this.fakeCommandRepr}`,
    );
  }

  private doMaxTimeout(): void {
    this.maxTimer = null;
    this.kill(
      `command timed out: ${pyStr(this.maxTime)} seconds elapsed running ${this.fakeCommandRepr}`,
    );
  }

  /** Kills the process: msg goes in the header, as runprocess's kill(msg). */
  kill(msg: string): void {
    if (this.ending || this.settled) return;
    if (!this.group) {
      this.killBeforeSpawn ??= msg; // the pipes are being opened: killed once spawned
      return;
    }
    this.cancelTimers();
    msg += ', attempting to kill';
    this.hdr('\n' + msg + '\n');
    this.killed = true;
    this.group.kill(this.interruptSignal, this.sigtermTime, () => this.cleanUp());
  }

  private cleanUp(): void {
    // twisted's transport.loseConnection(): stop reading, so that a
    // grandchild that keeps the pipes open cannot hold the command
    const stdio = this.stdio as ChildStdio;
    stdio.stdin?.destroy();
    stdio.stdout.destroy();
    stdio.stderr.destroy();
    if (!this.ending && !this.settled) {
      this.killTimer = longTimeout(() => this.doBackupTimeout(), RunProcess.BACKUP_TIMEOUT * 1000);
    }
  }

  private doBackupTimeout(): void {
    this.killTimer = null;
    if (this.ending || this.settled) return;
    const signalName = 'SIG' + this.interruptSignal;
    this.hdr(signalName + ' failed to kill process\n');
    if (this.sendRC) {
      this.hdr('using fake rc=-1\n');
      this.upd('rc', -1);
    }
    this.settled = true;
    this.cancelTimers();
    for (const w of this.watchers) w.cancel();
    this.rejectRC(new CommandFailure(`RuntimeError: ${signalName} failed to kill process`));
  }

  private cancelTimers(): void {
    this.ioTimerArmed = false;
    this.clearIoTimer();
    this.group?.cancel();
    for (const t of [this.maxTimer, this.killTimer]) t?.clear();
    this.maxTimer = this.killTimer = null;
  }
}

class IndexError extends Error {
  override name = 'IndexError';
}
