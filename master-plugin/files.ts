/**
 * File transfers and directory listing on an agent, built on RemoteAgent.run
 * with the agent's Buildbot commands: download_file (here → agent),
 * upload_file (agent → here), stat and listdir. Remote paths are relative to
 * the agent's basedir (absolute ones are taken as they are).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CommandResult, RemoteAgent } from './remote';

export const DEFAULT_TRANSFER_BLOCK = 64 * 1024;

/** A command on the agent ran but reported an error (rc != 0 or a failure). */
export class RemoteCommandError extends Error {
  constructor(
    message: string,
    /** The command's rc, when it sent one. */
    readonly rc: number | null,
    readonly failure: CommandResult['failure'] = null,
  ) {
    super(message);
    this.name = 'RemoteCommandError';
  }
}

export interface TransferOptions {
  /** Bytes per block (default 64 KiB). */
  blocksize?: number;
  /** Called as bytes move; total is null when it is not known. */
  onProgress?: (done: number, total: number | null) => void;
}

export interface PutOptions extends TransferOptions {
  /** Permission bits for the remote file; default the local file's (as cp and scp do); null: the agent's umask. */
  mode?: number | null;
}

export interface TransferResult {
  /** Bytes transferred. */
  bytes: number;
  /** The path written (remote for putFile, local for getFile). */
  path: string;
}

interface Collected {
  rc: number | null;
  text: string;
  updates: Map<string, unknown>;
}

function collector(): Collected & { sink: Parameters<RemoteAgent['run']>[2] } {
  const c: Collected = { rc: null, text: '', updates: new Map() };
  return Object.assign(c, {
    sink: {
      stderr: (data: Buffer) => void (c.text += data.toString('utf8')),
      header: (text: string) => void (c.text += text),
      update: (key: string, value: unknown) => {
        if (key === 'rc' && typeof value === 'number') c.rc = value;
        c.updates.set(key, value);
      },
    },
  });
}

function check(agent: RemoteAgent, what: string, result: CommandResult, c: Collected): void {
  if (result.failure) throw new RemoteCommandError(`${what} on agent '${agent.name}' failed: ${result.failure.message}`, c.rc, result.failure);
  if (c.rc !== 0) {
    const why = c.text.trim().split('\n').filter((l) => l && !/^elapsedTime=/.test(l)).pop() ?? `rc ${String(c.rc)}`;
    throw new RemoteCommandError(`${what} on agent '${agent.name}' failed: ${why}`, c.rc);
  }
}

function blocksizeOf(opts: TransferOptions): number {
  const b = opts.blocksize ?? DEFAULT_TRANSFER_BLOCK;
  if (!Number.isInteger(b) || b <= 0) throw new RangeError('blocksize must be a positive integer');
  return b;
}

/** Copies the local file `local` to `remote` on the agent (the agent's download_file). */
export async function putFile(agent: RemoteAgent, local: string, remote: string, opts: PutOptions = {}): Promise<TransferResult> {
  const blocksize = blocksizeOf(opts);
  const handle = await fs.promises.open(local, 'r');
  try {
    const st = await handle.stat();
    if (st.isDirectory()) throw new Error(`${local} is a directory`);
    if (remote.endsWith('/')) remote += path.basename(local);
    const mode = opts.mode === undefined ? st.mode & 0o777 : opts.mode;
    const total = st.isFile() ? st.size : null;
    const c = collector();
    const cmd = agent.run('download_file', { path: remote, blocksize, maxsize: null, mode }, c.sink);
    let sent = 0;
    let stopped = false;
    void cmd.result.then(
      () => (stopped = true),
      () => (stopped = true),
    );
    const pump = async () => {
      const buf = Buffer.allocUnsafe(blocksize);
      opts.onProgress?.(0, total);
      for (;;) {
        const { bytesRead } = await handle.read(buf, 0, blocksize, null);
        if (bytesRead === 0 || stopped) break;
        // a copy: the agent's side may still hold the previous block
        await cmd.writeFile(Buffer.from(buf.subarray(0, bytesRead)));
        sent += bytesRead;
        opts.onProgress?.(sent, total);
      }
      if (!stopped) await cmd.endFile();
    };
    // The agent may refuse (cannot open the file) and end the command before reading anything.
    const pumped = pump().catch((error: Error) => error);
    const result = await cmd.result;
    const pumpError = await pumped;
    check(agent, `writing ${remote}`, result, c);
    if (pumpError) throw pumpError;
    return { bytes: sent, path: remote };
  } finally {
    await handle.close();
  }
}

/** Copies `remote` from the agent to the local file `local` (the agent's upload_file); a local directory gets the remote name. */
export async function getFile(agent: RemoteAgent, remote: string, local: string, opts: TransferOptions = {}): Promise<TransferResult> {
  const blocksize = blocksizeOf(opts);
  let target = local;
  try {
    if (fs.statSync(local).isDirectory()) target = path.join(local, path.posix.basename(remote));
  } catch {
    // does not exist yet: it is the file name
  }
  let total: number | null = null;
  if (opts.onProgress) total = (await statFile(agent, remote).catch(() => null))?.size ?? null;
  const partial = path.join(path.dirname(target), `.${path.basename(target)}.tether-${process.pid}-${Date.now()}`);
  const handle = await fs.promises.open(partial, 'w', 0o666);
  let received = 0;
  let closed = false;
  try {
    const c = collector();
    opts.onProgress?.(0, total);
    const cmd = agent.run('upload_file', { path: remote, blocksize, maxsize: null, keepstamp: false }, {
      ...c.sink,
      fileData: async (data) => {
        for (let at = 0; at < data.length; ) at += (await handle.write(data, at)).bytesWritten;
        received += data.length;
        opts.onProgress?.(received, total);
      },
      fileClose: () => void (closed = true),
    });
    const result = await cmd.result;
    check(agent, `reading ${remote}`, result, c);
    if (!closed) throw new RemoteCommandError(`reading ${remote} on agent '${agent.name}': the transfer ended early`, c.rc);
    await handle.close();
    await fs.promises.rename(partial, target);
    return { bytes: received, path: target };
  } catch (error) {
    await handle.close().catch(() => undefined);
    await fs.promises.rm(partial, { force: true });
    throw error;
  }
}

export interface RemoteStat {
  size: number;
  mode: number;
  /** Seconds since the epoch (whole seconds). */
  mtime: number;
  isFile: boolean;
  isDirectory: boolean;
}

/** Stats a path on the agent (the agent's stat command, following symlinks); null when it does not exist. */
export async function statFile(agent: RemoteAgent, remote: string): Promise<RemoteStat | null> {
  const c = collector();
  const result = await agent.run('stat', { path: remote }, c.sink).result;
  if (!result.failure && c.rc === 2) return null;
  check(agent, `stat ${remote}`, result, c);
  const tuple = c.updates.get('stat') as Array<number | bigint>;
  const mode = Number(tuple[0]);
  return {
    mode,
    size: Number(tuple[6]),
    mtime: Number(tuple[8]),
    isFile: (mode & 0o170000) === 0o100000,
    isDirectory: (mode & 0o170000) === 0o040000,
  };
}

/** Lists a directory on the agent (the agent's listdir command), in directory order. */
export async function listDir(agent: RemoteAgent, remote: string): Promise<string[]> {
  const c = collector();
  const result = await agent.run('listdir', { path: remote }, c.sink).result;
  check(agent, `listing ${remote}`, result, c);
  return (c.updates.get('files') as string[] | undefined) ?? [];
}
