/**
 * What the three transfer commands share, from buildbot_worker/commands/transfer.py
 * (TransferCommand and WorkerFileUploadCommand._writeBlock):
 *
 *  - rc starts at 0; an interrupt sets rc = 1 and stops the block loop at the
 *    next block (the writer is still closed / the directory still unpacked);
 *  - finished(): sends ('rc', rc) and then, when set, the error text as
 *    'stderr' — directly, so even after an interrupt;
 *  - the upload loop reads min(blocksize, remaining) bytes per block and,
 *    once maxsize bytes have gone, stops with rc = 1 and
 *    "Maximum filesize reached, truncating file '<path>'" (also when the
 *    file is exactly maxsize bytes long, as buildbot-worker never reads its EOF).
 */
import type { Args, CommandIO } from './command';
import { CommandFailure } from './command';
import { optNumber } from './base';
import { keyError } from './paths';

/** args['blocksize'] (a required argument). */
export function blocksizeArg(args: Args): number {
  const blocksize = optNumber(args, 'blocksize');
  if (blocksize === null) {
    throw new CommandFailure("TypeError: 'blocksize' must be a number, not NoneType");
  }
  return blocksize;
}

/** args['maxsize']: the key must be there (KeyError otherwise); null means no limit. */
export function maxsizeArg(args: Args): number | null {
  if (!('maxsize' in args)) throw keyError('maxsize');
  return optNumber(args, 'maxsize');
}

export class TransferState {
  rc = 0;
  stderr: string | null = null;
  interrupted = false;
  private readonly onAbort = () => {
    if (this.interrupted) return;
    this.rc = 1;
    this.interrupted = true;
  };

  constructor(private readonly io: CommandIO) {
    if (io.signal.aborted) this.onAbort();
    else io.signal.addEventListener('abort', this.onAbort);
  }

  fail(message: string): void {
    if (this.stderr === null) {
      this.stderr = message;
      this.rc = 1;
    }
  }

  /** TransferCommand.finished: rc, then the error text (if any) on stderr. */
  async finished(): Promise<void> {
    this.io.signal.removeEventListener('abort', this.onAbort);
    this.io.update('rc', this.rc);
    if (this.stderr) await this.io.stderr(Buffer.from(this.stderr, 'utf8'));
  }
}

export function maxSizeMessage(path: string): string {
  return `Maximum filesize reached, truncating file '${path}'`;
}

/** Reads up to `length` bytes; an empty buffer (or null) means end of data. */
export type BlockSource = (length: number) => Promise<Buffer | null>;

/** WorkerFileUploadCommand._loop/_writeBlock: source -> io.writeFile, block by block. */
export async function sendBlocks(
  io: CommandIO,
  st: TransferState,
  source: BlockSource,
  path: string,
  blocksize: number,
  maxsize: number | null,
): Promise<void> {
  let remaining = maxsize;
  for (;;) {
    if (st.interrupted) return;
    let length = blocksize;
    if (remaining !== null && length > remaining) length = remaining;
    if (length <= 0) {
      st.fail(maxSizeMessage(path));
      return;
    }
    const data = await source(length);
    if (!data || data.length === 0) return; // EOF
    if (remaining !== null) remaining -= data.length;
    await io.writeFile(data);
  }
}

/**
 * Turns a stream of chunks into exact-length reads, like a Python file
 * object's read(n) (n bytes unless the data ends first).
 */
export class ChunkReader {
  private buffered: Buffer[] = [];
  private size = 0;
  private done = false;

  constructor(private readonly chunks: AsyncIterator<Buffer | Uint8Array | string>) {}

  async read(n: number): Promise<Buffer> {
    while (this.size < n && !this.done) {
      const next = await this.chunks.next();
      if (next.done) {
        this.done = true;
        break;
      }
      const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
      if (chunk.length === 0) continue;
      this.buffered.push(chunk);
      this.size += chunk.length;
    }
    const all = this.buffered.length === 1 ? this.buffered[0] : Buffer.concat(this.buffered);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.buffered = rest.length ? [rest] : [];
    this.size = rest.length;
    return out;
  }
}
