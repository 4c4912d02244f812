/**
 * 'download_file': buildbot_worker/commands/transfer.py WorkerFileDownloadCommand.
 *
 * Arguments: workdir + workerdest (or an already translated path), blocksize
 * (required), maxsize (required key, null: no limit), mode (required key,
 * null: leave the umask's mode).
 *
 * Creates the parent directories (an error there fails the command), opens
 * the file for writing (truncating it, in place: no temporary file), chmods it
 * to mode, then writes what io.readFile() returns until null. No header is
 * sent. Then rc, and stderr on error:
 *   cannot open/chmod -> rc 1, "Cannot open file '<path>' for download"
 *     (nothing is read from the master)
 *   more than maxsize bytes -> the first maxsize bytes are kept, rc 1,
 *     "Maximum filesize reached, truncating file '<path>'"
 *     (also for a file of exactly maxsize bytes, as in buildbot-worker)
 *   interrupted -> rc 1, no text (a read in progress is abandoned).
 * io.readFile() has no length argument, so a chunk longer than what maxsize
 * still allows is cut here instead of being asked for in smaller reads; the
 * bytes on disk are the same. CommandIO has no way to close the master's
 * reader early: the command stream's completion ends the transfer.
 */
import * as fs from 'fs';
import type { CommandIO } from './command';
import { CommandFailure } from './command';
import { defineCommand } from './base';
import { exists, keyError, makedirs, pathDirname } from './paths';
import { blocksizeArg, maxSizeMessage, maxsizeArg, TransferState } from './transfer';

interface DownloadSetup {
  path: string;
  blocksize: number;
  maxsize: number | null;
  mode: number | null;
}

/** io.readFile(), or null as soon as the command is interrupted. */
function readOrInterrupt(io: CommandIO): Promise<Buffer | null> {
  if (io.signal.aborted) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(null);
    io.signal.addEventListener('abort', onAbort, { once: true });
    io.readFile().then(
      (data) => {
        io.signal.removeEventListener('abort', onAbort);
        resolve(data);
      },
      (err: unknown) => {
        io.signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

export const downloadFile = defineCommand<DownloadSetup>({
  name: 'download_file',
  className: 'WorkerFileDownloadCommand',
  requiredArgs: ['path', 'blocksize'],
  setup(args) {
    if (!('mode' in args)) throw keyError('mode');
    const mode = args.mode;
    if (mode !== null && mode !== undefined && typeof mode !== 'number') {
      throw new CommandFailure(`TypeError: 'mode' must be an integer, not ${typeof mode}`);
    }
    return {
      path: args.path as string,
      blocksize: blocksizeArg(args),
      maxsize: maxsizeArg(args),
      mode: (mode as number | null | undefined) ?? null,
    };
  },
  async start({ path, blocksize, maxsize, mode }, io) {
    const st = new TransferState(io);
    const dirname = pathDirname(path);
    if (!exists(dirname)) makedirs(dirname);

    let fd: number | null = null;
    try {
      fd = fs.openSync(path, 'w');
      if (mode !== null) fs.chmodSync(path, mode);
    } catch {
      if (fd !== null) fs.closeSync(fd);
      fd = null;
      st.stderr = `Cannot open file '${path}' for download`;
      st.rc = 1;
    }

    let remaining = maxsize;
    let failure: unknown = null;
    try {
      while (fd !== null && !st.interrupted) {
        let length = blocksize;
        if (remaining !== null && length > remaining) length = remaining;
        if (length <= 0) {
          st.fail(maxSizeMessage(path));
          break;
        }
        let data = await readOrInterrupt(io);
        if (data === null) break; // EOF (or interrupted)
        if (remaining !== null) {
          if (data.length > remaining) data = data.subarray(0, remaining);
          remaining -= data.length;
        }
        for (let at = 0; at < data.length; ) at += fs.writeSync(fd, data, at);
      }
    } catch (err) {
      failure = err;
    }
    if (fd !== null) fs.closeSync(fd);
    await st.finished();
    if (failure) throw failure;
  },
});
