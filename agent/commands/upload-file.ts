/**
 * 'upload_file': buildbot_worker/commands/transfer.py WorkerFileUploadCommand.
 *
 * Arguments: workdir + workersrc (or an already translated path), blocksize
 * (required), maxsize (required key, may be null: no limit), keepstamp.
 *
 * Sends header "sending <path>\n", then the file in blocksize blocks through
 * io.writeFile (each awaited: flow control), then closes the master's writer
 * with io.closeFile(), passing {atime, mtime} (float seconds, read before the
 * transfer) when keepstamp is set. Then rc, and stderr on error:
 *   cannot open (missing, unreadable, a directory) -> rc 1,
 *     "Cannot open file '<path>' for upload" (the writer is still closed)
 *   more than maxsize -> the first maxsize bytes, rc 1,
 *     "Maximum filesize reached, truncating file '<path>'"
 *   interrupted -> rc 1, no text.
 * A read or write error after that closes the writer and fails the command.
 */
import * as fs from 'fs';
import type { FileTimes } from './command';
import { argOr, defineCommand, truthy } from './base';
import { blocksizeArg, maxsizeArg, sendBlocks, TransferState } from './transfer';

interface UploadFileSetup {
  path: string;
  blocksize: number;
  maxsize: number | null;
  keepstamp: boolean;
}

export const uploadFile = defineCommand<UploadFileSetup>({
  name: 'upload_file',
  className: 'WorkerFileUploadCommand',
  requiredArgs: ['path', 'blocksize'],
  setup: (args) => ({
    path: args.path as string,
    blocksize: blocksizeArg(args),
    maxsize: maxsizeArg(args),
    keepstamp: truthy(argOr(args, 'keepstamp', false)),
  }),
  async start({ path, blocksize, maxsize, keepstamp }, io, ctx) {
    const st = new TransferState(io);
    let times: FileTimes | undefined;
    let fd: number | null = null;
    try {
      if (keepstamp) {
        const s = fs.statSync(path, { bigint: true });
        times = { atime: Number(s.atimeNs) / 1e9, mtime: Number(s.mtimeNs) / 1e9 };
      }
      fd = fs.openSync(path, 'r');
      if (fs.fstatSync(fd).isDirectory()) {
        fs.closeSync(fd); // Python's open() refuses a directory (EISDIR)
        fd = null;
        throw new Error('EISDIR');
      }
    } catch {
      fd = null;
      st.stderr = `Cannot open file '${path}' for upload`;
      st.rc = 1;
    }

    ctx.sendStatus('header', `sending ${path}\n`);

    let failure: unknown = null;
    try {
      if (fd !== null) {
        const handle = fd;
        const source = (length: number) =>
          new Promise<Buffer>((resolve, reject) => {
            const buf = Buffer.allocUnsafe(length);
            fs.read(handle, buf, 0, length, null, (err, n) =>
              err ? reject(err) : resolve(buf.subarray(0, n)),
            );
          });
        await sendBlocks(io, st, source, path, blocksize, maxsize);
      }
    } catch (err) {
      // _close_err: rc = 1, close the writer but keep the loop's failure
      failure = err;
      st.rc = 1;
    }
    if (fd !== null) fs.closeSync(fd);
    if (failure) await io.closeFile().catch(() => undefined);
    else {
      try {
        await io.closeFile(keepstamp && times ? times : undefined);
      } catch (err) {
        failure = err;
      }
    }
    await st.finished();
    if (failure) throw failure;
  },
});
