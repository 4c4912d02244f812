/**
 * The master's end of a serial line, bound to one worker. The port stays
 * open across sessions: each session gets a fresh stream over the same port
 * (the hub runs a new handshake on it). Between sessions the line is idle,
 * with no timer running: the first bytes that arrive start the next
 * handshake. A device that goes away (unplugged USB adapter, killed pty) is
 * reopened with backoff until it is back.
 *
 * Opens the device with serialport (@serialport/stream and the native
 * @serialport/bindings-cpp); the agent uses the pure JavaScript line in
 * wire/serial-line.ts instead.
 */
import { promises as fsp } from 'node:fs';
import { Duplex } from 'node:stream';
import { autoDetect } from '@serialport/bindings-cpp';
import { SerialPortStream } from '@serialport/stream';
import { serialBytesPerSecond } from '../wire/serial-line';
import { type Listener, type OpenedTransport, type SerialEndpoint, UsageError, describeEndpoint } from '../wire/transport';

export interface SerialListenerOptions {
  log?: (line: string) => void;
  /** First and longest wait between attempts to reopen a device that went away (ms). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/** Called with each new session's stream on the line; `peer` names the line for log lines. */
export type SerialStreamHandler = (opened: OpenedTransport, peer: string) => void;

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 5000;
const DATA_HIGH_WATER = 16 * 1024;

type Port = SerialPortStream;

/**
 * One session's view of the port: what the port receives is readable here,
 * what is written goes to the port. Ending or destroying it leaves the port
 * open for the next session.
 */
class LineSession extends Duplex {
  private released = false;
  /** Set once the session ended its side: later bytes belong to the next session. */
  finishing = false;

  constructor(
    private readonly port: Port,
    private readonly release: (session: LineSession) => void,
  ) {
    super({ allowHalfOpen: false, readableHighWaterMark: DATA_HIGH_WATER, writableHighWaterMark: DATA_HIGH_WATER });
  }

  /** Bytes from the port. */
  deliver(chunk: Buffer): void {
    if (!this.push(chunk)) this.port.pause();
  }

  override _read(): void {
    if (this.port.isPaused()) this.port.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    if (!this.port.isOpen) {
      done(new Error(`serial line ${this.port.path} is closed`));
      return;
    }
    this.port.write(chunk, (error) => done(error ?? null));
  }

  override _final(done: (error?: Error | null) => void): void {
    // All writes have reached the driver; the port stays open.
    this.finishing = true;
    done();
    this.push(null);
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    this.detach();
    done(error);
  }

  /** Stops taking bytes from the port (without ending the stream). */
  detach(): void {
    if (this.released) return;
    this.released = true;
    this.release(this);
  }
}

export class SerialListener implements Listener {
  private port: Port | null = null;
  private session: LineSession | null = null;
  private reopenTimer: NodeJS.Timeout | null = null;
  private reopening: Promise<void> | null = null;
  private backoffMs: number;
  private closed = false;
  private readonly log: (line: string) => void;
  /** Sessions started on the line so far. */
  sessions = 0;

  constructor(
    readonly address: SerialEndpoint,
    private readonly options: SerialListenerOptions,
    private readonly onStream: SerialStreamHandler,
  ) {
    this.log = options.log ?? (() => undefined);
    this.backoffMs = options.minBackoffMs ?? MIN_BACKOFF_MS;
  }

  /** True while the device is open. */
  get isOpen(): boolean {
    return this.port !== null;
  }

  /** Opens the device the first time: a missing or unusable device is the user's mistake. */
  async start(): Promise<void> {
    const path = this.address.path;
    let stat;
    try {
      stat = await fsp.stat(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`serial device ${path} does not exist`);
      throw new UsageError(`cannot open serial device ${path}: ${(error as Error).message}`);
    }
    if (!stat.isCharacterDevice()) throw new UsageError(`${path} is not a serial device`);
    let port: Port;
    try {
      port = await this.openPort();
    } catch (error) {
      throw new UsageError(`cannot open serial device ${path}: ${(error as Error).message.replace(/^Error: /, '')}`);
    }
    this.attach(port);
  }

  private openPort(): Promise<Port> {
    const port = new SerialPortStream({
      binding: autoDetect(),
      path: this.address.path,
      baudRate: this.address.baud,
      rtscts: this.address.rtscts ?? false,
      dataBits: 8,
      stopBits: 1,
      parity: 'none',
      autoOpen: false,
      highWaterMark: DATA_HIGH_WATER,
    });
    // Errors after a close (a write racing a disconnect) have nobody else to go to.
    port.on('error', (error: Error) => this.onPortGone(port, error));
    return new Promise((resolve, reject) => {
      port.open((error) => {
        if (error) {
          port.removeAllListeners();
          port.on('error', () => undefined);
          port.destroy();
          reject(error);
        } else resolve(port);
      });
    });
  }

  private attach(port: Port): void {
    this.port = port;
    port.on('data', (chunk: Buffer) => {
      if (this.closed) return;
      // A session that is ending takes nothing more: these bytes start the next one.
      if (this.session && (this.session.finishing || this.session.destroyed)) this.session.detach();
      this.session ??= this.startSession(port);
      this.session.deliver(chunk);
    });
    port.on('close', (error: Error | null) => this.onPortGone(port, error ?? new Error('the port closed')));
  }

  /** A new session on the line: the hub runs a handshake on it. */
  private startSession(port: Port): LineSession {
    const session = new LineSession(port, (s) => {
      if (this.session !== s) return;
      // The line is idle until the next bytes arrive.
      this.session = null;
      if (port.isPaused()) port.resume();
    });
    this.session = session;
    this.sessions++;
    this.onStream({ transport: session, lossy: true, bytesPerSecond: serialBytesPerSecond(this.address.baud) }, `serial:${this.address.path}`);
    return session;
  }

  private onPortGone(port: Port, error: Error): void {
    if (this.port !== port) return;
    this.port = null;
    port.removeAllListeners();
    port.on('error', () => undefined);
    if (port.isOpen) port.close(() => undefined);
    port.destroy();
    const session = this.session;
    this.session = null;
    if (this.closed) return;
    const why = `serial line ${this.address.path} went away (${error.message})`;
    session?.destroy(Object.assign(new Error(why), { disconnected: true }));
    this.log(`${why}; reopening it when it is back`);
    this.backoffMs = this.options.minBackoffMs ?? MIN_BACKOFF_MS;
    this.scheduleReopen();
  }

  private scheduleReopen(): void {
    if (this.closed || this.reopenTimer) return;
    const delay = this.backoffMs * (0.75 + Math.random() / 4);
    this.backoffMs = Math.min(this.options.maxBackoffMs ?? MAX_BACKOFF_MS, this.backoffMs * 2);
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      this.reopening = this.openPort().then(
        (port) => {
          if (this.closed) {
            port.removeAllListeners();
            port.on('error', () => undefined);
            return new Promise<void>((resolve) => port.close(() => resolve()));
          }
          this.log(`serial line ${this.address.path} is back`);
          this.attach(port);
        },
        () => this.scheduleReopen(),
      ).finally(() => {
        this.reopening = null;
      });
    }, delay);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.reopenTimer = null;
    const port = this.port;
    this.port = null;
    this.session?.destroy();
    this.session = null;
    // An attempt to reopen that is under way closes what it opens.
    await this.reopening;
    if (!port) return;
    port.removeAllListeners();
    port.on('error', () => undefined);
    if (port.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
    port.destroy();
  }
}

/** Opens a serial line for one worker; rejects with a UsageError if the device is missing or unusable. */
export async function listenSerial(
  endpoint: SerialEndpoint,
  options: SerialListenerOptions,
  onStream: SerialStreamHandler,
): Promise<SerialListener> {
  if (endpoint.worker === undefined) throw new UsageError(`${describeEndpoint(endpoint)} must name its worker (&worker=NAME)`);
  const listener = new SerialListener(endpoint, options, onStream);
  await listener.start();
  return listener;
}
