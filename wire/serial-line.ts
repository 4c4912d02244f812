/**
 * A serial line in pure JavaScript, for Linux: no native addon, so the agent
 * can ship as a single executable.
 *
 * `stty` sets the line up (speed, raw, 8N1, no modem control, no flow control
 * unless asked); the device is opened with fs.open and read and written
 * through ONE libuv TTY handle in non-blocking mode. libuv reopens a tty
 * device on a file description of its own and makes it non-blocking; Node's
 * tty.WriteStream would then switch it back to blocking writes (meant for
 * terminals), which on a slow line stalls the whole event loop for as long as
 * the line takes to carry the data. tty.ReadStream built with `writable: true`
 * never does that: its writes queue in libuv and go out as the line takes
 * them, like a socket's.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { Duplex } from 'node:stream';
import * as tty from 'node:tty';

/** The rates Linux's termios (and so stty) can set. */
export const STANDARD_BAUD_RATES: readonly number[] = [
  50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800,
  500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000,
];

/** Bytes per second on an 8N1 line: ten bit times per byte (start, 8 data, stop). */
export function serialBytesPerSecond(baud: number): number {
  return baud / 10;
}

export interface SerialLineOptions {
  baud: number;
  /** RTS/CTS hardware flow control (off unless asked). */
  rtscts?: boolean;
}

/** An error about the device itself (missing, not a tty, gone): `code` says which. */
export class SerialLineError extends Error {
  constructor(
    message: string,
    readonly code: 'ENOENT' | 'ENOTTY' | 'EOPEN' | 'ESTTY' | 'EGONE',
    /** True when a device that was open went away (unplugged, or the pty's other side closed). */
    readonly disconnected = false,
  ) {
    super(message);
    this.name = 'SerialLineError';
  }
}

/** The stty arguments that set `path` up: raw 8N1, no echo, no modem control, no flow control unless asked. */
export function sttyArguments(path: string, options: SerialLineOptions): string[] {
  return [
    '-F', path, String(options.baud),
    'raw', '-echo', '-iexten', 'clocal', 'cs8', '-cstopb', '-parenb',
    options.rtscts ? 'crtscts' : '-crtscts', '-ixon', '-ixoff', 'min', '1', 'time', '0',
  ];
}

function stty(path: string, options: SerialLineOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('stty', sttyArguments(path, options), { timeout: 10_000 }, (error, _stdout, stderr) => {
      if (!error) resolve();
      else {
        const why = (stderr || error.message).trim().replace(/^stty: /, '');
        reject(new SerialLineError(`cannot set up serial line ${path} at ${options.baud} baud: ${why}`, 'ESTTY'));
      }
    });
  });
}

function openFd(path: string): Promise<number> {
  const { O_RDWR, O_NOCTTY, O_NONBLOCK } = fs.constants;
  return new Promise((resolve, reject) => {
    fs.open(path, O_RDWR | O_NOCTTY | O_NONBLOCK, (error, fd) => {
      if (!error) resolve(fd);
      else if (error.code === 'ENOENT') reject(new SerialLineError(`serial device ${path} does not exist`, 'ENOENT'));
      else reject(new SerialLineError(`cannot open serial device ${path}: ${error.message}`, 'EOPEN'));
    });
  });
}

/**
 * An open serial line: a Duplex of bytes. end() sends what was written, then
 * closes the device; a device that goes away destroys it with a
 * SerialLineError whose `disconnected` is true.
 */
export class SerialLine extends Duplex {
  private closeWaiters: Array<() => void> | null = [];

  constructor(
    readonly path: string,
    readonly baud: number,
    private readonly tty: tty.ReadStream,
    private readonly fd: number,
  ) {
    super({ allowHalfOpen: false, readableHighWaterMark: 16 * 1024, writableHighWaterMark: 16 * 1024 });
    tty.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) tty.pause();
    });
    // libuv reports EIO on a tty (the device or the pty's other side went away) as the end of the stream.
    tty.on('end', () => this.gone());
    tty.on('error', (error: NodeJS.ErrnoException) => this.gone(error));
    tty.once('close', () => {
      // libuv closed its own descriptor; ours is the last one: closing it waits for unsent
      // output in the kernel, so do it on the thread pool, never on the event loop.
      fs.close(this.fd, () => {
        const waiters = this.closeWaiters ?? [];
        this.closeWaiters = null;
        for (const wake of waiters) wake();
        this.gone();
      });
    });
  }

  /** The line rate in bytes per second (8N1). */
  get bytesPerSecond(): number {
    return serialBytesPerSecond(this.baud);
  }

  private gone(error?: NodeJS.ErrnoException): void {
    if (this.destroyed) return;
    const why = error?.code ? `${error.code}` : 'hung up';
    this.destroy(new SerialLineError(`serial line ${this.path} went away (${why})`, 'EGONE', true));
  }

  override _read(): void {
    if (this.tty.isPaused()) this.tty.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    // Never blocks: the handle is non-blocking and libuv queues what the line cannot take yet.
    this.tty.write(chunk, (error) => done(error ?? null));
  }

  override _final(done: (error?: Error | null) => void): void {
    // Every write has been handed to the kernel by now; closing the descriptor sends the rest.
    done();
    this.push(null);
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    if (this.closeWaiters === null) {
      done(error);
      return;
    }
    this.closeWaiters.push(() => done(error));
    this.tty.destroy();
  }
}

/**
 * Opens a serial device: sets it up with stty and returns the line. Rejects
 * with a SerialLineError (ENOENT: no such device; ENOTTY: not a terminal
 * device; EOPEN, ESTTY: could not open or set it up).
 */
export async function openSerialLine(path: string, options: SerialLineOptions): Promise<SerialLine> {
  if (!STANDARD_BAUD_RATES.includes(options.baud)) {
    throw new SerialLineError(`${options.baud} is not a baud rate this system can set`, 'ESTTY');
  }
  const fd = await openFd(path);
  let stream: tty.ReadStream;
  /** Set when the tty handle works on `fd` itself (and closes it). */
  let handleOwnsFd = false;
  try {
    if (!tty.isatty(fd)) throw new SerialLineError(`${path} is not a serial device (not a terminal)`, 'ENOTTY');
    await stty(path, options);
    // One handle for both directions; libuv makes its descriptor non-blocking.
    stream = new tty.ReadStream(fd, { readable: true, writable: true });
    // libuv reopens the device on a descriptor of its own; where it cannot, it falls back to
    // blocking writes, which would stall the event loop on a slow line: refuse that.
    if ((stream as unknown as { _handle?: { fd?: number } })._handle?.fd === fd) {
      handleOwnsFd = true;
      stream.destroy();
      throw new SerialLineError(`cannot open ${path} for non-blocking writes (its tty name cannot be resolved)`, 'EOPEN');
    }
  } catch (error) {
    if (!handleOwnsFd) fs.close(fd, () => undefined);
    throw error;
  }
  return new SerialLine(path, options.baud, stream, fd);
}
