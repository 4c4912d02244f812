/**
 * Transfers between Buildbot and the agent, as buildbot_worker/commands/transfer.py
 * does them over msgpack, where Buildbot's writer and reader are reached by command_id.
 *
 * upload_file / upload_directory (UploadWriter): the agent's file bytes are
 * gathered into writes of the step's blocksize, at least MIN_UPLOAD_WRITE
 * (DirectoryUpload's 16 KiB would cost a round trip per 16 KiB) and at most
 * MAX_UPLOAD_WRITE (held in memory per upload). Buildbot acknowledges each
 * writer call and they go one after another; the agent waits only while a
 * write is under way. A failed call fails the transfer; nothing more is written.
 *
 * download_file (pullDownload): the bridge pulls the file from Buildbot's reader and pushes it to
 * the agent. Mirrors WorkerFileDownloadCommand:
 * update_read_file {length: min(blocksize, bytes left under maxsize)} until an
 * empty block, then update_read_file_close (always, even after an error).
 *
 * Note: the stock Buildbot 3.7 msgpack master answers update_read_file with
 * result nil (it drops the data remote_read returned); a nil result is taken as
 * end of file and reported through warn(), so such a master yields an empty file.
 */
import { ConnectionLostError, type Msg, RemoteError, errorText, resultBytes } from './buildbot-protocol';
import type { FileTimes } from './remote';

export const DEFAULT_BLOCKSIZE = 16 * 1024;
/** Never ask for (or hold) more than this per block, whatever blocksize says. */
export const MAX_BLOCK = 1024 * 1024;

export interface DownloadPull {
  /** Sends update_read_file {length}; resolves with the response's result. */
  read(length: number): Promise<unknown>;
  /** Sends update_read_file_close. */
  close(): Promise<unknown>;
  /** Hands bytes to the agent (RemoteCommand.writeFile: resolves when credit allows more). */
  write(chunk: Buffer): Promise<void>;
  /** No more bytes (RemoteCommand.endFile). */
  end(): Promise<void>;
  blocksize?: unknown;
  maxsize?: unknown;
  /** Settles when the agent's command is over: pulling stops. */
  stop?: Promise<unknown>;
  warn?(line: string): void;
}

export interface DownloadResult {
  bytes: number;
  /** endFile() was delivered (false when the command ended first or an error stopped us). */
  ended: boolean;
  /** The master answered nil instead of bytes (stock 3.7 msgpack master). */
  nilData: boolean;
  /** Stopped because maxsize bytes were pulled. */
  hitMaxsize: boolean;
}

const STOPPED = Symbol('stopped');

export async function pullDownload(p: DownloadPull): Promise<DownloadResult> {
  const warn = p.warn ?? (() => undefined);
  let stopped = false;
  const stop: Promise<typeof STOPPED> = p.stop
    ? p.stop.then(
        () => STOPPED,
        () => STOPPED,
      )
    : new Promise<typeof STOPPED>(() => undefined);
  void stop.then(() => {
    stopped = true;
  });
  const race = <T>(x: Promise<T>): Promise<T | typeof STOPPED> => Promise.race([x, stop]);

  const bs = Number(p.blocksize);
  const blocksize = Number.isInteger(bs) && bs > 0 ? Math.min(bs, MAX_BLOCK) : DEFAULT_BLOCKSIZE;
  const ms = p.maxsize === null || p.maxsize === undefined ? null : Number(p.maxsize);
  let remaining = ms !== null && Number.isFinite(ms) ? Math.max(0, Math.floor(ms)) : null;

  const res: DownloadResult = { bytes: 0, ended: false, nilData: false, hitMaxsize: false };
  let failure: unknown = null;
  try {
    for (;;) {
      if (stopped) break;
      let length = blocksize;
      if (remaining !== null && length > remaining) length = remaining;
      if (length <= 0) {
        res.hitMaxsize = true;
        break;
      }
      const r = await race(p.read(length));
      if (r === STOPPED) break;
      const data = resultBytes(r);
      if (data === null) {
        res.nilData = true;
        warn(
          'Buildbot answered update_read_file without data (the stock 3.7 msgpack master drops it; ' +
            'the master needs the read_file fix) - the downloaded file will be empty',
        );
        break;
      }
      if (data.length === 0) break;
      const chunk = data.length > length ? data.subarray(0, length) : data;
      if (remaining !== null) remaining -= chunk.length;
      res.bytes += chunk.length;
      if ((await race(p.write(chunk))) === STOPPED) break;
    }
    if (!stopped) {
      if ((await race(p.end())) !== STOPPED) res.ended = true;
    }
  } catch (e) {
    failure = e;
  }
  try {
    await p.close();
  } catch (e) {
    warn(`while closing Buildbot's reader: ${(e as Error).message}`);
  }
  if (failure !== null) throw failure;
  return res;
}

export const MIN_UPLOAD_WRITE = 256 * 1024;
export const MAX_UPLOAD_WRITE = 4 * 1024 * 1024;

/** What a transfer needs of its command. */
export interface TransferIo {
  /** Sends one request about the command (command_id added); rejects with ConnectionLostError once the connection is gone. */
  request(op: string, fields?: Msg): Promise<unknown>;
  /** The command takes no more output. */
  isDead(): boolean;
  /** The transfer failed: the command reports `text` and its agent's command is interrupted. */
  fail(text: string): void;
  /** The command, as the bridge names it in its log. */
  label: string;
  log(line: string): void;
}

/** Buildbot's writer ops for an upload command (null: the command has no writer). */
function writerOps(command: string): { write: string; close: string } | null {
  if (command === 'upload_file') return { write: 'update_upload_file_write', close: 'update_upload_file_close' };
  if (command === 'upload_directory') return { write: 'update_upload_directory_write', close: 'update_upload_directory_unpack' };
  return null;
}

export class UploadWriter {
  private readonly ops: { write: string; close: string } | null;
  private readonly blockBytes: number;
  private chain: Promise<void> = Promise.resolve();
  private failed = false;
  private warned = false;
  private parts: Buffer[] = [];
  private bytes = 0;

  constructor(
    private readonly command: string,
    blocksize: unknown,
    private readonly io: TransferIo,
  ) {
    this.ops = writerOps(command);
    this.blockBytes = typeof blocksize === 'number' ? Math.min(Math.max(blocksize, MIN_UPLOAD_WRITE), MAX_UPLOAD_WRITE) : MIN_UPLOAD_WRITE;
  }

  /** File bytes from the agent: a promise while a whole write is under way. */
  write(chunk: Buffer): Promise<void> | void {
    if (chunk.length === 0) return;
    this.parts.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes >= this.blockBytes) return this.writeGathered();
  }

  /** The file is complete: the rest is written, the writer closed, and for upload_file the times set. */
  close(times?: FileTimes): Promise<void> | void {
    void this.writeGathered();
    return this.step('close', async (ops) => {
      await this.io.request(ops.close);
      if (times && this.command === 'upload_file') {
        try {
          await this.io.request('update_upload_file_utime', { access_time: times.atime, modified_time: times.mtime });
        } catch (e) {
          if (!(e instanceof RemoteError)) throw e;
          // Buildbot 3.7's msgpack master calls remote_utime('access_time', 'modified_time')
          // (two string literals) and always fails here; the file itself is complete.
          this.io.log(`${this.io.label}: Buildbot could not set the uploaded file's times (${e.message}); the file is kept without them`);
        }
      }
    });
  }

  /** Resolves once the last writer call is over. */
  done(): Promise<void> {
    return this.chain.catch(() => undefined);
  }

  private writeGathered(): Promise<void> | void {
    if (this.bytes === 0) return;
    const data = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts);
    this.parts = [];
    this.bytes = 0;
    return this.step('file data', async (ops) => {
      await this.io.request(ops.write, { args: data });
    });
  }

  /** Runs one writer call after the previous one; a failure fails the transfer. */
  private step(what: string, fn: (ops: { write: string; close: string }) => Promise<void>): Promise<void> | void {
    const { io, ops } = this;
    if (io.isDead() || this.failed) return;
    if (!ops) {
      if (!this.warned) io.log(`${io.label} sent ${what} but has no Buildbot writer; dropped`);
      this.warned = true;
      return;
    }
    this.chain = this.chain.then(async () => {
      if (io.isDead() || this.failed) return;
      try {
        await fn(ops);
      } catch (e) {
        if (e instanceof ConnectionLostError) return;
        this.failed = true;
        io.fail(`upload to Buildbot failed (${what}): ${errorText(e)}`);
      }
    });
    return this.chain;
  }
}
