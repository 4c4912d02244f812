/**
 * An in-memory CommandIO for the command tests: records everything a command
 * sends, in order, and models the master's flow control — output calls
 * resolve only while the bytes not yet consumed fit in `window`, and a
 * consumer takes one chunk every `consumeDelayMs` — so tests can check that
 * commands wait for credit (maxPending) and that memory stays bounded.
 */
import type { CommandIO, FileTimes } from '../../agent/commands/command';
import type { ProcessGroupRecords } from '../../agent/orphans';

export type Event =
  | { kind: 'update'; key: string; value: unknown }
  | { kind: 'header'; text: string }
  | { kind: 'stdout' | 'stderr' | 'write'; data: Buffer }
  | { kind: 'log'; name: string; data: Buffer }
  | { kind: 'close'; times?: FileTimes };

export interface FakeIOOptions {
  basedir: string;
  /** Bytes the "master" lets through before the consumer takes them (default: unlimited). */
  window?: number;
  /** Time the consumer needs per chunk (default 0: consumed at once). */
  consumeDelayMs?: number;
  /** download_file data, returned one chunk per readFile(); then null. */
  download?: Buffer[];
  /** Bytes for readStdin(), one chunk per call; then null. */
  stdin?: Buffer[];
  /** Delay before each readStdin() answers. */
  stdinDelayMs?: number;
  /** Where spawned process groups are recorded (agent/orphans.ts); none by default. */
  processGroups?: ProcessGroupRecords;
}

type Channel = 'stdout' | 'stderr' | 'log' | 'write';

export class FakeIO implements CommandIO {
  readonly basedir: string;
  readonly events: Event[] = [];
  private readonly controller = new AbortController();
  private readonly window: number;
  private readonly delay: number;
  private inFlight = 0;
  private consumer: Promise<void> = Promise.resolve();
  private waiters: Array<() => void> = [];
  private readonly download: Buffer[];
  private readonly stdinChunks: Buffer[];
  private readonly stdinDelay: number;
  /** Highest number of calls per channel made before the previous one resolved. */
  readonly maxPending: Record<Channel, number> = { stdout: 0, stderr: 0, log: 0, write: 0 };
  private readonly pending: Record<Channel, number> = { stdout: 0, stderr: 0, log: 0, write: 0 };
  /** Highest number of bytes accepted but not yet consumed. */
  maxInFlight = 0;
  /** Called on every event, for tests that act on what they see. */
  onEvent: ((e: Event) => void) | null = null;

  constructor(opts: FakeIOOptions) {
    this.basedir = opts.basedir;
    this.window = opts.window ?? Infinity;
    this.delay = opts.consumeDelayMs ?? 0;
    this.download = [...(opts.download ?? [])];
    this.stdinChunks = [...(opts.stdin ?? [])];
    this.stdinDelay = opts.stdinDelayMs ?? 0;
    const groups = opts.processGroups;
    if (groups) this.recordProcessGroup = (pid, command) => groups.record(pid, command);
  }

  recordProcessGroup?: (pid: number, command: string) => () => void;

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  interrupt(why = 'interrupted'): void {
    this.controller.abort(why);
  }

  private record(e: Event): void {
    this.events.push(e);
    this.onEvent?.(e);
  }

  update(key: string, value: unknown): void {
    this.record({ kind: 'update', key, value });
  }

  header(text: string): void {
    this.record({ kind: 'header', text });
  }

  private async flow(channel: Channel, data: Buffer, e: Event): Promise<void> {
    this.pending[channel]++;
    this.maxPending[channel] = Math.max(this.maxPending[channel], this.pending[channel]);
    try {
      while (this.inFlight > 0 && this.inFlight + data.length > this.window) {
        await new Promise<void>((resolve) => this.waiters.push(resolve));
      }
      this.record(e);
      this.inFlight += data.length;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      this.consumer = this.consumer.then(async () => {
        if (this.delay) await new Promise((r) => setTimeout(r, this.delay));
        this.inFlight -= data.length;
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
      });
    } finally {
      this.pending[channel]--;
    }
  }

  stdout(chunk: Buffer): Promise<void> {
    return this.flow('stdout', chunk, { kind: 'stdout', data: Buffer.from(chunk) });
  }

  stderr(chunk: Buffer): Promise<void> {
    return this.flow('stderr', chunk, { kind: 'stderr', data: Buffer.from(chunk) });
  }

  log(name: string, chunk: Buffer): Promise<void> {
    return this.flow('log', chunk, { kind: 'log', name, data: Buffer.from(chunk) });
  }

  writeFile(chunk: Buffer): Promise<void> {
    return this.flow('write', chunk, { kind: 'write', data: Buffer.from(chunk) });
  }

  async closeFile(times?: FileTimes): Promise<void> {
    this.record(times ? { kind: 'close', times } : { kind: 'close' });
  }

  async readFile(): Promise<Buffer | null> {
    await new Promise((r) => setImmediate(r));
    return this.download.shift() ?? null;
  }

  async readStdin(): Promise<Buffer | null> {
    if (this.stdinDelay) await new Promise((r) => setTimeout(r, this.stdinDelay));
    return this.stdinChunks.shift() ?? null;
  }

  // ---- what the tests look at ----

  /** All header text, concatenated. */
  get headerText(): string {
    return this.events
      .filter((e): e is Extract<Event, { kind: 'header' }> => e.kind === 'header')
      .map((e) => e.text)
      .join('');
  }

  bytes(kind: 'stdout' | 'stderr' | 'write'): Buffer {
    return Buffer.concat(
      this.events.filter((e) => e.kind === kind).map((e) => (e as { data: Buffer }).data),
    );
  }

  logBytes(name: string): Buffer {
    return Buffer.concat(
      this.events
        .filter((e): e is Extract<Event, { kind: 'log' }> => e.kind === 'log' && e.name === name)
        .map((e) => e.data),
    );
  }

  updates(key: string): unknown[] {
    return this.events
      .filter((e): e is Extract<Event, { kind: 'update' }> => e.kind === 'update' && e.key === key)
      .map((e) => e.value);
  }

  /** The single rc update (undefined when none was sent). */
  get rc(): unknown {
    const rcs = this.updates('rc');
    if (rcs.length > 1) throw new Error(`several rc updates: ${JSON.stringify(rcs)}`);
    return rcs[0];
  }

  /** Event kinds/keys in order, for order checks: 'header', 'stdout', 'update:rc', ... */
  get sequence(): string[] {
    return this.events.map((e) => (e.kind === 'update' ? `update:${e.key}` : e.kind));
  }
}
