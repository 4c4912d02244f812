/**
 * The master side's view of a connected agent and of one command running on it.
 * The Buildbot bridge, `tether-master exec` and the demo all go through these.
 */
import type { FileTimes } from '../agent/commands/command';

export type { FileTimes };

/** Worker information the agent reports after authentication (buildbot's get_worker_info keys). */
export type WorkerInfo = Record<string, unknown>;

/**
 * Receives what a command sends, in the order the agent sent it. A returned
 * promise holds back the next event and the flow-control credit for this one,
 * so a slow consumer slows the agent instead of growing a buffer.
 */
export interface CommandSink {
  stdout?(chunk: Buffer): void | Promise<void>;
  stderr?(chunk: Buffer): void | Promise<void>;
  header?(text: string): void | Promise<void>;
  log?(name: string, chunk: Buffer): void | Promise<void>;
  /** Any other status update (rc, elapsed, stat, files, ...). */
  update?(key: string, value: unknown): void | Promise<void>;
  /** upload_file / upload_directory bytes for the master's writer. */
  fileData?(chunk: Buffer): void | Promise<void>;
  /** The agent closed the upload; times are set when keepstamp asked for them. */
  fileClose?(times?: FileTimes): void | Promise<void>;
}

export interface CommandResult {
  /** Null when the command completed; otherwise why it failed (buildbot's 'complete' failure). */
  failure: { code: string; message: string } | null;
}

export interface RemoteCommand {
  readonly stream: number;
  /** download_file: bytes for the agent; resolves once the agent's credit allows more. */
  writeFile(chunk: Buffer): Promise<void>;
  /** download_file: no more bytes. */
  endFile(): Promise<void>;
  /** Bytes for the command's stdin; null closes it. */
  writeStdin(chunk: Buffer | null): Promise<void>;
  /** Asks the agent to interrupt the command (buildbot's interrupt_command). */
  interrupt(why: string): void;
  /** Settles after every sink event has been delivered. Rejects if the link is lost for good. */
  readonly result: Promise<CommandResult>;
}

export interface RemoteAgent {
  readonly name: string;
  readonly info: WorkerInfo;
  /** Starts a command (buildbot's start_command); `args` as Buildbot would send them. */
  run(command: string, args: Record<string, unknown>, sink: CommandSink): RemoteCommand;
  /** Asks the agent to print a message in its log (buildbot's print). */
  print(text: string): void;
  /** Asks the agent to shut down (buildbot's shutdown). */
  shutdown(): void;
  /** Ends the session with a reason the agent logs; the agent reconnects later. */
  disconnect(reason: string): void;
  /** Resolves when the agent's session ends. */
  readonly closed: Promise<void>;
}
