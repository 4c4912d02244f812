/**
 * Where command output waits while the link is down (the session will
 * resume): in memory up to a shared limit, then in a file per stream under
 * the basedir; only a full disk limit holds the command up. While the link is
 * up, a stream keeps at most about a window here (AgentCommand.mustWait).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const DEFAULT_SPOOL_MEMORY = 64 * 1024 * 1024;
export const DEFAULT_SPOOL_DISK = 1024 * 1024 * 1024;

/** A chunk in memory, or its place in the stream's spill file. */
export type Stored = { data: Buffer } | { offset: number; length: number };

/** The memory and disk budget that every stream's spool draws on. */
export class SpoolBudget {
  memoryUsed = 0;
  diskUsed = 0;
  private files = 0;

  constructor(
    readonly dir: string,
    readonly memoryLimit = DEFAULT_SPOOL_MEMORY,
    readonly diskLimit = DEFAULT_SPOOL_DISK,
  ) {}

  newFilePath(): string {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    return path.join(this.dir, `${process.pid}-${this.files++}.spool`);
  }

  get full(): boolean {
    return this.diskUsed >= this.diskLimit;
  }
}

/** One stream's chunks, in order. */
export class StreamSpool {
  private fd: number | null = null;
  private file = '';
  private fileEnd = 0;

  constructor(private readonly budget: SpoolBudget) {}

  store(data: Buffer): Stored {
    if (this.budget.memoryUsed + data.length <= this.budget.memoryLimit) {
      this.budget.memoryUsed += data.length;
      return { data };
    }
    if (this.fd === null) {
      this.file = this.budget.newFilePath();
      this.fd = fs.openSync(this.file, 'w+', 0o600);
    }
    fs.writeSync(this.fd, data, 0, data.length, this.fileEnd);
    const stored = { offset: this.fileEnd, length: data.length };
    this.fileEnd += data.length;
    this.budget.diskUsed += data.length;
    return stored;
  }

  /** Takes a chunk back out; its memory or disk space returns to the budget. */
  take(stored: Stored): Buffer {
    if ('data' in stored) {
      this.budget.memoryUsed -= stored.data.length;
      return stored.data;
    }
    const data = Buffer.allocUnsafe(stored.length);
    fs.readSync(this.fd!, data, 0, stored.length, stored.offset);
    this.budget.diskUsed -= stored.length;
    return data;
  }

  /** Removes the spill file (the stream ended). */
  dispose(): void {
    if (this.fd === null) return;
    fs.closeSync(this.fd);
    fs.rmSync(this.file, { force: true });
    this.fd = null;
  }
}
