/**
 * download_file: the bridge pulls the file from Buildbot's reader and pushes it to
 * the agent. Mirrors buildbot_worker/commands/transfer.py WorkerFileDownloadCommand:
 * update_read_file {length: min(blocksize, bytes left under maxsize)} until an
 * empty block, then update_read_file_close (always, even after an error).
 *
 * Note: the stock Buildbot 3.7 msgpack master answers update_read_file with
 * result nil (it drops the data remote_read returned); a nil result is taken as
 * end of file and reported through warn(), so such a master yields an empty file.
 */
import { resultBytes } from './buildbot-protocol';

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
