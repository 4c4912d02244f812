/**
 * A command's stdout and stderr as pipes, as buildbot-worker's children have
 * them (twisted makes them with os.pipe()). Node's spawn gives a child Unix
 * socketpairs instead, and Linux will not open a socket through /dev/stdout or
 * /dev/stderr (ENXIO): `echo x > /dev/stderr` or `tee /dev/stdout` failed in
 * a step that passes under buildbot-worker. A pipe also costs less CPU per
 * byte than a socket, on both ends (docs/performance.md). (stdin: runprocess.ts.)
 *
 * Node cannot call pipe(2). Each pipe is a FIFO that mkfifo(1) made in a
 * directory of this process's own (mode 0700), opened at both ends and
 * unlinked at once, so nothing else can open it. One difference from pipe(2)
 * remains: reopening it through /dev/stdout once the agent has stopped reading
 * (a killed command's straggler) waits instead of failing. FIFOs are made
 * ahead, a few at a time, so that a command does not wait for mkfifo. Where
 * none can be made (no mkfifo, no FIFOs on the temporary directory's
 * filesystem), commands get Node's socketpairs; checkChildPipes() tells the
 * agent so once, at start.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';

/** The agent's ends of one command's output pipes. */
export interface OutputStreams {
  stdout: Readable;
  stderr: Readable;
}

/** One command's stdout and stderr pipes, open at both ends. */
export interface OutputPipes {
  /** spawn()'s stdio for 1 and 2: the child's ends. */
  readonly childEnds: [number, number];
  /** Once spawn() has returned: closes the child's ends here; the agent's ends as streams. */
  agentEnds(): OutputStreams;
  /** When spawn() threw: closes both ends. */
  close(): void;
}

const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;
/** FIFOs made by one mkfifo run: four commands' worth. */
const BATCH = 8;
/** The FIFO directory's name: this, the process's pid, '-' and mkdtemp's random part. */
const DIR_PREFIX = 'tether-pipes-';

class FifoMaker {
  private dir: string | null = null;
  private ready: string[] = [];
  private making: Promise<string | null> | null = null;
  private made = 0;

  /** `n` fresh FIFO paths, or why none could be made. */
  async take(n: number): Promise<string[] | string> {
    while (this.ready.length < n) {
      const failure = await this.make();
      if (failure !== null) return failure;
    }
    const paths = this.ready.splice(0, n);
    if (this.ready.length < n) void this.make(); // ahead of the next command
    return paths;
  }

  /** Makes one batch; resolves null, or why it failed. */
  make(): Promise<string | null> {
    this.making ??= this.makeBatch().finally(() => (this.making = null));
    return this.making;
  }

  private async makeBatch(): Promise<string | null> {
    try {
      if (this.dir === null || !fs.existsSync(this.dir)) {
        if (this.dir === null) removeStaleDirs();
        this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${DIR_PREFIX}${process.pid}-`)); // mode 0700
        const dir = this.dir;
        process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
      }
      const dir = this.dir;
      const paths = Array.from({ length: BATCH }, () => path.join(dir, String(this.made++)));
      const failure = await run('mkfifo', ['-m', '600', ...paths]);
      if (failure === null) this.ready.push(...paths);
      return failure;
    } catch (error) {
      return (error as Error).message;
    }
  }
}


/**
 * Removes the FIFO directories of agents that were killed before they could
 * (named after their process, which is gone): this user's real directories
 * only, never a symbolic link.
 */
function removeStaleDirs(): void {
  const tmp = os.tmpdir();
  for (const name of fs.readdirSync(tmp)) {
    const pid = new RegExp(`^${DIR_PREFIX}(\\d+)-`).exec(name)?.[1];
    if (pid === undefined || Number(pid) === process.pid || running(Number(pid))) continue;
    const dir = path.join(tmp, name);
    try {
      const st = fs.lstatSync(dir);
      if (st.isDirectory() && st.uid === process.getuid?.()) fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // gone meanwhile, or not ours to look at
    }
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** Runs a program; resolves null once it exits 0, or with why it did not. */
function run(file: string, args: string[]): Promise<string | null> {
  return new Promise((resolve) => {
    let stderr = '';
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', (error) => resolve(`${file}: ${error.message}`));
    child.on('close', (code) => resolve(code === 0 ? null : `${file}: ${stderr.trim() || `exit ${String(code)}`}`));
  });
}

const fifos = new FifoMaker();

/**
 * Makes the first FIFOs; resolves null, or with why commands will get
 * socketpairs instead of pipes (for the agent's log).
 */
export function checkChildPipes(): Promise<string | null> {
  return fifos.make();
}

/** One command's output pipes; null where FIFOs cannot be made (the command then gets Node's socketpairs). */
export async function openOutputPipes(): Promise<OutputPipes | null> {
  const paths = await fifos.take(2);
  if (typeof paths === 'string') return null;
  const fds: number[] = [];
  try {
    // The agent's end first: the child's (blocking, as a child expects) then opens at once.
    for (const file of paths) fds.push(fs.openSync(file, O_RDONLY | O_NONBLOCK), fs.openSync(file, O_WRONLY));
  } catch {
    for (const fd of fds) fs.closeSync(fd);
    return null; // a FIFO removed under us (a temporary-file cleaner): this command gets socketpairs
  } finally {
    for (const file of paths) fs.rmSync(file, { force: true });
  }
  const [stdout, childStdout, stderr, childStderr] = fds;
  return {
    childEnds: [childStdout, childStderr],
    close: () => fds.forEach((fd) => fs.closeSync(fd)),
    agentEnds() {
      fs.closeSync(childStdout);
      fs.closeSync(childStderr);
      // as child_process makes a child's output streams
      return { stdout: new net.Socket({ fd: stdout, readable: true }), stderr: new net.Socket({ fd: stderr, readable: true }) };
    },
  };
}
