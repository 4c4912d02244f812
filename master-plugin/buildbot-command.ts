/**
 * One Buildbot command on the bridge (BuildbotCommand): the sink its agent
 * command reports to, what Buildbot gets of it (output and values through
 * CommandOutput, file bytes through the transfers), and its 'complete'.
 *
 * Ordering: updates keep the agent's order; 'complete' is sent only after
 * every update was acknowledged, the upload writer and the download reader
 * were closed. It carries the agent's failure, or else the bridge's own (a
 * failed transfer).
 */
import { ConnectionLostError, type Msg, type MsgpackPeer, errorText } from './buildbot-protocol';
import type { StartRequest } from './buildbot-dispatch';
import { CommandOutput, type OutputOptions } from './buildbot-output';
import { type TransferIo, UploadWriter, pullDownload } from './buildbot-transfer';
import type { CommandResult, CommandSink, RemoteCommand } from './remote';

export interface CommandContext extends Omit<OutputOptions, 'send' | 'label'> {
  /** The connection's request layer. */
  peer: MsgpackPeer;
}

export class BuildbotCommand {
  readonly key: string;
  readonly name: string;
  readonly label: string;
  remote: RemoteCommand | null = null;
  readonly output: CommandOutput;
  private readonly upload: UploadWriter;
  private download: Promise<void> = Promise.resolve();
  /** The bridge's own failure (a transfer), reported in 'complete' if the agent reported none. */
  private failure: string | null = null;
  private readonly io: TransferIo;

  constructor(
    private readonly request: StartRequest,
    private readonly ctx: CommandContext,
  ) {
    const { key, name, builder, wireId } = request;
    this.key = key;
    this.name = name;
    this.label = `${name} [${key}]${builder ? ` (${builder})` : ''}`;
    this.io = {
      request: (op, fields: Msg = {}) => ctx.peer.request(op, { command_id: wireId, ...fields }),
      isDead: () => this.dead,
      fail: (text) => {
        this.failure = text;
        ctx.log(`${this.label}: ${text}; interrupting the agent's command`);
        this.interruptAgent(text);
      },
      label: this.label,
      log: ctx.log,
    };
    this.output = new CommandOutput({ ...ctx, label: this.label, send: (args) => this.io.request('update', { args }) });
    this.upload = new UploadWriter(name, request.args.blocksize, this.io);
  }

  /** No more output is taken: the command finished, or the connection is gone. */
  get dead(): boolean {
    return this.output.stopped;
  }

  /** What the agent's command reports to. */
  get sink(): CommandSink {
    const out = this.output;
    return {
      stdout: (c) => out.output('stdout', undefined, c),
      stderr: (c) => out.output('stderr', undefined, c),
      header: (t) => out.output('header', undefined, t),
      log: (n, c) => out.output('log', n, c),
      update: (k, v) => out.update(k, v),
      fileData: (c) => this.upload.write(c),
      fileClose: (t) => this.upload.close(t),
    };
  }

  /**
   * The agent runs the command: for download_file the pull starts; 'complete'
   * follows its result. Resolves when the command is over for the bridge.
   */
  started(remote: RemoteCommand): Promise<void> {
    this.remote = remote;
    const settled = remote.result.then(
      () => undefined,
      () => undefined,
    );
    if (this.name === 'download_file') this.startDownload(remote, settled);
    return remote.result
      .then(
        (r: CommandResult) => this.finish(r.failure ? `${r.failure.code}: ${r.failure.message}` : null),
        (e) => this.finish(`the tether agent lost the command: ${errorText(e)}`),
      )
      .finally(() => this.output.stop());
  }

  /** Buildbot's interrupt_command: held output goes first, as buildbot-worker does. */
  interrupt(why: string): void {
    this.output.flushLines();
    this.output.flush();
    this.remote?.interrupt(why);
  }

  interruptAgent(why: string): void {
    if (this.dead || !this.remote) return;
    try {
      this.remote.interrupt(why);
    } catch (e) {
      this.ctx.log(`interrupting ${this.label} failed: ${errorText(e)}`);
    }
  }

  private startDownload(remote: RemoteCommand, settled: Promise<void>): void {
    const { io } = this;
    this.download = pullDownload({
      read: (length) => io.request('update_read_file', { length }),
      close: () => io.request('update_read_file_close'),
      write: (chunk) => remote.writeFile(chunk),
      end: () => remote.endFile(),
      blocksize: this.request.args.blocksize,
      maxsize: this.request.args.maxsize,
      stop: settled,
      warn: (line) => this.ctx.log(`${this.label}: ${line}`),
    }).then(
      () => undefined,
      (e) => {
        if (e instanceof ConnectionLostError || this.dead) return;
        io.fail(`download from Buildbot failed: ${errorText(e)}`);
      },
    );
  }

  private async finish(failure: string | null): Promise<void> {
    const { output, ctx } = this;
    output.flushLines();
    output.flush();
    await this.upload.done();
    await this.download;
    await output.acknowledged();
    if (this.dead || !ctx.peer.isOpen) return;
    output.stop();
    const text = failure ?? this.failure;
    if (text) ctx.log(`${this.label} failed: ${text}`);
    try {
      await this.io.request('complete', { args: text });
    } catch (e) {
      if (!(e instanceof ConnectionLostError)) ctx.log(`Buildbot rejected the completion of ${this.label}: ${errorText(e)}`);
    }
  }
}
