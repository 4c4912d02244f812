/**
 * What a command sees of the world: the agent's side of one command stream.
 * Mirrors buildbot-worker's Command API (sendStatus, the master's writer and
 * reader objects) so each command can follow buildbot_worker/commands/*.py.
 */
export interface FileTimes {
  /** Seconds since the epoch, as buildbot-worker's remote_utime sends them. */
  atime: number;
  mtime: number;
}

export interface CommandIO {
  /** The agent's --basedir; workdir arguments are relative to it. */
  readonly basedir: string;
  /** Aborted when the master interrupts the command; reason is the master's text. */
  readonly signal: AbortSignal;
  /** A status update, as buildbot-worker's sendStatus({key: value}). */
  update(key: string, value: unknown): void;
  /** Process output. Each resolves once flow-control credit allows more. */
  stdout(chunk: Buffer): Promise<void>;
  stderr(chunk: Buffer): Promise<void>;
  /** Header text (buildbot's 'header' update), written between output lines. */
  header(text: string): void;
  /** A watched logfile's new bytes (buildbot's ('log', (name, data)) update). */
  log(name: string, chunk: Buffer): Promise<void>;
  /** upload_file / upload_directory: bytes for the master's writer. */
  writeFile(chunk: Buffer): Promise<void>;
  /** Closes the master's writer, after setting times when keepstamp asked for them. */
  closeFile(times?: FileTimes): Promise<void>;
  /** download_file: the next bytes from the master's reader; null at its end. */
  readFile(): Promise<Buffer | null>;
  /** Bytes the master sends to the command's stdin; null at its end (exec --stdin). */
  readStdin(): Promise<Buffer | null>;
  /**
   * Records a process group just spawned, so that the next agent can kill it
   * should this one be killed (agent/orphans.ts); returns what forgets it,
   * for when the group's leader has exited. Absent outside an agent.
   */
  recordProcessGroup?(pid: number, command: string): () => void;
}

/** Thrown by a command to fail it the way buildbot-worker's exceptions do. */
export class CommandFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommandFailure';
  }
}

export type Args = Record<string, unknown>;

/** A command runs to completion; a thrown CommandFailure becomes the stream's failure. */
export type Command = (args: Args, io: CommandIO) => Promise<void>;
