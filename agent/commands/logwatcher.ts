/**
 * runprocess.LogFileWatcher: polls a file the command writes (a shell step's
 * logfiles={name: path}) and sends its new bytes as ('log', (name, data)).
 *
 * As in buildbot-worker: the file's (ctime, mtime, size) — whole seconds, as
 * Python's s[stat.ST_CTIME] — are recorded when the watcher is created; the
 * file counts as "started" once those change (a file deleted meanwhile resets
 * the baseline). From then on everything after the read position is sent, in
 * reads of at most 10000 bytes; with follow=True the read starts at the size
 * seen when it started, so only bytes appended during the command are sent.
 * start() polls at once and then every POLL_INTERVAL seconds; stop() polls a
 * last time. A polling error stops the periodic polling (LoopingCall's
 * errback); the final poll is still tried.
 * Bytes are sent raw: the master side decodes.
 */
import * as fs from 'fs';

export interface LogSink {
  /** Resolves when flow control allows more (the watcher reads no further until then). */
  addLogfile(name: string, data: Buffer): Promise<void>;
}

type FileStats = [number, number, number];

const READ_SIZE = 10000;

export class LogFileWatcher {
  /** Seconds between polls (buildbot-worker's class attribute; tests may lower it). */
  static POLL_INTERVAL = 2;

  private oldStats: FileStats | null;
  private started = false;
  private fd: number | null = null;
  private position = 0;
  private timer: NodeJS.Timeout | null = null;
  private polling: Promise<void> = Promise.resolve();

  constructor(
    private readonly sink: LogSink,
    readonly name: string,
    readonly logfile: string,
    readonly follow = false,
  ) {
    this.oldStats = this.statFile();
  }

  start(): void {
    void this.poll();
    this.timer = setInterval(() => void this.poll(), LogFileWatcher.POLL_INTERVAL * 1000);
  }

  /** Stops polling without a final read (the command was abandoned). */
  cancel(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Final poll, then stop. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.poll();
    if (this.fd !== null) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // already gone
      }
      this.fd = null;
    }
  }

  private statFile(): FileStats | null {
    try {
      const s = fs.statSync(this.logfile);
      return [Math.floor(s.ctimeMs / 1000), Math.floor(s.mtimeMs / 1000), s.size];
    } catch {
      return null;
    }
  }

  /** One poll at a time: a poll waiting for flow-control credit delays the next. */
  poll(): Promise<void> {
    this.polling = this.polling.then(() => this.pollOnce());
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    try {
      if (!this.started) {
        const s = this.statFile();
        if (sameStats(s, this.oldStats)) return; // not started yet
        if (!s) {
          // the file was there, but now it's deleted: forget the initial state
          this.oldStats = null;
          return;
        }
        this.fd = fs.openSync(this.logfile, 'r');
        this.position = this.follow ? s[2] : 0;
        this.started = true;
      }
      const buf = Buffer.alloc(READ_SIZE);
      for (;;) {
        const n = fs.readSync(this.fd as number, buf, 0, READ_SIZE, this.position);
        if (n === 0) return;
        this.position += n;
        await this.sink.addLogfile(this.name, Buffer.from(buf.subarray(0, n)));
      }
    } catch {
      // LoopingCall errback: "Polling error", the poller is dropped
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
    }
  }
}

function sameStats(a: FileStats | null, b: FileStats | null): boolean {
  if (a === null || b === null) return a === b;
  return a[0] === b[0] && a[1] === b[1] && a[2] === b[2];
}
