/**
 * 'upload_directory': buildbot_worker/commands/transfer.py WorkerDirectoryUploadCommand.
 *
 * Arguments: workdir + workersrc (or an already translated path), blocksize
 * (required), maxsize (required key, null: no limit), compress (required key:
 * 'gz', 'bz2' or null).
 *
 * buildbot-worker does tarfile.open(mode).add(path, '') into a temporary file
 * and sends that; here the tar is made by npm tar as a stream and sent as it
 * is produced (pulled block by block, so flow control bounds memory and no
 * temporary file is needed). Entries are the directory's contents with
 * relative names ("a", "sub/", "sub/b"), sorted per directory, symlinks kept
 * as symlinks — what the master's tarfile.extractall(destroot) then unpacks.
 * Python's archive also has a first entry for the directory itself (named
 * "/"); it is left out here. gz: gzip level 9 (tarfile's default); bz2: npm
 * tar has no bzip2, so the tar is piped through the system's `bzip2 -9`; on
 * an agent without it the command fails before sending anything (the master
 * unpacks with mode 'r|bz2' and could not read anything else).
 *
 * Sends header "sending <path>\n", the blocks via io.writeFile, then
 * io.closeFile() — the master's unpack() — even when maxsize truncated the
 * archive (rc 1, "Maximum filesize reached, truncating file '<path>'") or it
 * was interrupted (rc 1). A missing source fails the command before the
 * header, as Python's tarfile.add raising does ("FileNotFoundError: [Errno 2]
 * No such file or directory: '<path>'"). Since the archive is streamed, a read
 * error met while archiving comes after the header: rc 1, then the failure.
 * A source that is a symlink to a directory is archived through the link
 * (tarfile.add would store the symlink itself); a source that is a file is
 * archived under its own name (tarfile would name it '').
 */
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import type * as Tar from 'tar';
import { withoutSecret } from '../environment';
import { CommandFailure } from './command';
import { defineCommand } from './base';
import { keyError, which } from './paths';
import { pyRepr } from './pyrepr';
import { blocksizeArg, ChunkReader, maxsizeArg, sendBlocks, TransferState } from './transfer';

interface UploadDirSetup {
  path: string;
  blocksize: number;
  maxsize: number | null;
  compress: 'gz' | 'bz2' | null;
}

export const uploadDirectory = defineCommand<UploadDirSetup>({
  name: 'upload_directory',
  className: 'WorkerDirectoryUploadCommand',
  requiredArgs: ['path', 'blocksize'],
  setup(args) {
    if (!('compress' in args)) throw keyError('compress');
    const compress = args.compress;
    return {
      path: args.path as string,
      blocksize: blocksizeArg(args),
      maxsize: maxsizeArg(args),
      // like tarfile mode selection: anything but 'bz2'/'gz' is uncompressed
      compress: compress === 'gz' || compress === 'bz2' ? compress : null,
    };
  },
  async start({ path: src, blocksize, maxsize, compress }, io, ctx) {
    const stat = fs.statSync(src); // the archive's first add(): fails the command if missing
    let cwd = src;
    let entries: string[];
    if (stat.isDirectory()) {
      entries = fs.readdirSync(src).sort();
    } else {
      // tarfile would store the file under the name ''; keep its own name instead
      cwd = path.dirname(src);
      entries = [path.basename(src)];
    }
    let bzip2: string | null = null;
    if (compress === 'bz2') {
      bzip2 = which('bzip2');
      if (!bzip2) {
        throw new CommandFailure(
          `compress=${pyRepr(compress)} needs a bzip2 program, and this agent has none`,
        );
      }
    }

    const st = new TransferState(io);
    ctx.sendStatus('header', `sending ${src}\n`);

    // npm tar is loaded by the first upload_directory: an agent that never runs one keeps its 1.1 MB.
    const { create: tarCreate } = require('tar') as typeof Tar;
    const pack = tarCreate({ cwd, gzip: compress === 'gz' ? { level: 9 } : false }, entries);
    let child: ChildProcess | null = null;
    let chunks: AsyncIterable<Buffer>;
    let childFailed: Promise<never> | null = null;
    if (bzip2) {
      const proc = spawn(bzip2, ['-9', '-c'], { stdio: ['pipe', 'pipe', 'ignore'], env: withoutSecret(process.env) });
      child = proc;
      proc.stdin.on('error', () => undefined);
      pack.on('error', (err: unknown) => proc.stdout.destroy(err as Error));
      pack.pipe(proc.stdin);
      childFailed = new Promise<never>((_resolve, reject) => {
        proc.on('error', reject);
        proc.on('close', (code, signal) => {
          if (code !== 0 && !proc.stdout.destroyed) {
            reject(new CommandFailure(`bzip2 failed (exit code ${code ?? signal})`));
          }
        });
      });
      childFailed.catch(() => undefined);
      chunks = proc.stdout;
    } else {
      chunks = pack as unknown as AsyncIterable<Buffer>;
    }
    const reader = new ChunkReader(chunks[Symbol.asyncIterator]());
    const source = (length: number) =>
      childFailed ? Promise.race([reader.read(length), childFailed]) : reader.read(length);

    let failure: unknown = null;
    try {
      await sendBlocks(io, st, source, src, blocksize, maxsize);
    } catch (err) {
      failure = err; // archiving or sending failed
      st.rc = 1;
    } finally {
      // stop archiving (truncated, interrupted, failed) or reap the finished compressor;
      // a directory read still under way may fail later, and nobody reads the archive any more
      pack.on('error', () => undefined);
      pack.removeAllListeners('data');
      (pack as unknown as { destroy?: () => void }).destroy?.();
      if (child && child.exitCode === null) child.kill('SIGKILL');
    }
    if (!failure) {
      try {
        await io.closeFile(); // the master's unpack()
      } catch (err) {
        st.rc = 1;
        failure = err;
      }
    }
    await st.finished();
    if (failure) throw failure;
  },
});
