/**
 * Serial lines for tests: socat pty pairs, and a line simulator that relays
 * between two byte streams the way a real line would carry them.
 *
 *   socatPair()        one pty pair: what is written to `a` is read from `b`
 *   LineSimulator      a relay between two streams: a byte rate in each
 *                      direction (11 520 B/s for 115200 baud 8N1) with UART-like
 *                      backpressure, seeded bit flips and dropped bytes, and a
 *                      cable that can be pulled out and plugged back in
 *   simulatedLine()    two socat pairs with the simulator between them: the
 *                      agent opens `agentPath`, the master `masterPath`
 *   memoryLine()       the simulator between in-memory streams (one process)
 *
 *   agent ─ A1 ═socat═ B1 ─ LineSimulator ─ B2 ═socat═ A2 ─ master
 *
 * A noise test is a few lines:
 *
 *   const line = await simulatedLine({ baud: 115200, noise: { seed: 7, bitErrorRate: 1e-5 } });
 *   t.teardown(() => line.close());
 *   // agent --master serial:${line.agentPath}, hub.listen(`serial:${line.masterPath}?...&worker=w`)
 *   // ... run commands; line.sim.stats['ab'].flipped, line.sim.setNoise({ ... }) mid-test
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Duplex } from 'node:stream';
import { openSerialLine } from '../../wire/serial-line';
import { sleep } from './support';

// ---------------------------------------------------------------- socat

const socats = new Set<ChildProcess>();
let exitHook = false;

export interface SocatPair {
  /** The two ends (symlinks to /dev/pts/N, made by socat). */
  readonly a: string;
  readonly b: string;
  readonly dir: string;
  /** socat's PID while it runs. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Kills socat by its PID: both ends see the device go away (EIO) and the links vanish. */
  stop(): Promise<void>;
  /** Starts socat again on the same links (new ptys behind them). */
  start(): Promise<void>;
  /** Stops socat and removes the directory. */
  close(): Promise<void>;
}

/**
 * Starts `socat pty,raw,echo=0,link=DIR/a pty,raw,echo=0,link=DIR/b` and
 * resolves once both links exist. `dir` defaults to a new temp directory.
 */
export async function socatPair(options: { dir?: string; names?: [string, string] } = {}): Promise<SocatPair> {
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tether-serial-'));
  const [nameA, nameB] = options.names ?? ['a', 'b'];
  const a = path.join(dir, nameA);
  const b = path.join(dir, nameB);
  let child: ChildProcess | null = null;
  let stderr = '';

  const start = async () => {
    if (child) return;
    for (const link of [a, b]) fs.rmSync(link, { force: true });
    stderr = '';
    const proc = spawn('socat', [`pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.once('exit', () => {
      socats.delete(proc);
      if (child === proc) child = null;
    });
    child = proc;
    socats.add(proc);
    if (!exitHook) {
      exitHook = true;
      process.once('exit', () => {
        for (const c of socats) if (c.pid) process.kill(c.pid, 'SIGKILL');
      });
    }
    const deadline = Date.now() + 5000;
    while (!(fs.existsSync(a) && fs.existsSync(b))) {
      if (child !== proc) throw new Error(`socat exited: ${stderr.trim()}`);
      if (Date.now() > deadline) throw new Error(`socat made no links in ${dir} within 5 s: ${stderr.trim()}`);
      await sleep(10);
    }
  };

  const stop = async () => {
    const proc = child;
    if (!proc || proc.pid === undefined) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    process.kill(proc.pid, 'SIGTERM');
    const timer = setTimeout(() => proc.pid !== undefined && child === proc && process.kill(proc.pid, 'SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
    // socat removes its links on exit; make sure, so that a restart waits for new ones.
    for (const link of [a, b]) fs.rmSync(link, { force: true });
  };

  await start();
  return {
    a,
    b,
    dir,
    get pid() {
      return child?.pid;
    },
    get running() {
      return child !== null;
    },
    stop,
    start,
    async close() {
      await stop();
      if (!options.dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------- noise

/** mulberry32: a small seeded PRNG, so that a failing run can be replayed. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface NoiseOptions {
  seed: number;
  /** Probability that any one bit is flipped. */
  bitErrorRate?: number;
  /** Probability that any one byte is lost. */
  dropRate?: number;
}

export interface LaneStats {
  /** Bytes taken from the sending end. */
  bytesIn: number;
  /** Bytes that went through the line (flipped ones included, dropped and lost ones not). */
  bytesOut: number;
  /** Bits flipped. */
  flipped: number;
  /** Bytes dropped by the noise. */
  dropped: number;
  /** Bytes sent while the cable was out. */
  lost: number;
}

/**
 * The noise on one direction of a line. Where the errors fall depends only
 * on the seed and on how many bytes went through before, never on timing or
 * on how the bytes were chunked: the same seed gives the same corruption.
 * Bit flips and drops draw from two generators, so changing one rate does
 * not move the other's errors.
 */
export class Noise {
  private readonly flipRandom: () => number;
  private readonly dropRandom: () => number;
  /** Bits until the next flipped bit; bytes until the next dropped byte. */
  private untilFlip: number;
  private untilDrop: number;

  constructor(readonly options: NoiseOptions, salt = 0) {
    this.flipRandom = prng((options.seed ^ Math.imul(salt + 1, 0x9e3779b1)) >>> 0);
    this.dropRandom = prng((options.seed ^ Math.imul(salt + 1, 0x85ebca77) ^ 0x5bd1e995) >>> 0);
    this.untilFlip = geometric(options.bitErrorRate ?? 0, this.flipRandom);
    this.untilDrop = geometric(options.dropRate ?? 0, this.dropRandom);
  }

  /** Returns the bytes as they arrive: some bits flipped, some bytes missing. */
  apply(chunk: Buffer, stats?: Pick<LaneStats, 'flipped' | 'dropped'>): Buffer {
    const out = Buffer.allocUnsafe(chunk.length);
    let n = 0;
    for (let i = 0; i < chunk.length; i++) {
      let byte = chunk[i];
      while (this.untilFlip < 8) {
        byte ^= 1 << this.untilFlip;
        if (stats) stats.flipped++;
        this.untilFlip += 1 + geometric(this.options.bitErrorRate ?? 0, this.flipRandom);
      }
      this.untilFlip -= 8;
      if (this.untilDrop === 0) {
        if (stats) stats.dropped++;
        this.untilDrop = geometric(this.options.dropRate ?? 0, this.dropRandom);
        continue;
      }
      this.untilDrop--;
      out[n++] = byte;
    }
    return out.subarray(0, n);
  }
}

/** Trials before the next success at probability p (Infinity when p is 0). */
function geometric(p: number, random: () => number): number {
  if (p <= 0) return Infinity;
  if (p >= 1) return 0;
  return Math.floor(Math.log(1 - random()) / Math.log(1 - p));
}

// ---------------------------------------------------------------- the simulator

export type Direction = 'ab' | 'ba';

export interface LineSimOptions {
  /** Bytes per second in each direction; or give `baud` (8N1: baud / 10). Default 11 520 (115200 baud). */
  bytesPerSecond?: number;
  baud?: number;
  /**
   * Bytes the line holds per direction before it stops reading the sending
   * end (the UART FIFO and the driver's buffer): the sender then sees
   * backpressure, as on a real port. Default 4096.
   */
  bufferBytes?: number;
  /** Noise on both directions (each direction its own sequence, from the same seed). */
  noise?: NoiseOptions;
  /** Any other damage: called with the bytes of one direction as they leave the line. */
  impair?: (chunk: Buffer, direction: Direction) => Buffer;
  /** How often the line delivers, in ms (default 4: about 46 bytes a time at 115200 baud). */
  tickMs?: number;
}

/** One direction of the line: reads `src`, delivers to `dst` at the line rate. */
class Lane {
  readonly stats: LaneStats = { bytesIn: 0, bytesOut: 0, flipped: 0, dropped: 0, lost: 0 };
  noise: Noise | null = null;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  /** When the line finishes sending everything delivered so far (performance.now() ms). */
  private freeAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private waitingDrain = false;
  private sourcePaused = false;
  private stopped = false;
  private readonly onData = (chunk: Buffer) => this.take(chunk);
  private readonly onDrain = () => {
    this.waitingDrain = false;
    // The receiving end was not reading: the line does not bank that time.
    this.freeAt = Math.max(this.freeAt, performance.now());
    this.pump();
  };

  constructor(
    private readonly sim: LineSimulator,
    readonly direction: Direction,
    private readonly src: Duplex,
    private readonly dst: Duplex,
  ) {
    src.on('data', this.onData);
  }

  private take(chunk: Buffer): void {
    if (this.stopped) return;
    if (this.queued === 0) this.freeAt = Math.max(this.freeAt, performance.now());
    this.queue.push(chunk);
    this.queued += chunk.length;
    this.stats.bytesIn += chunk.length;
    if (this.queued >= this.sim.bufferBytes && !this.sourcePaused) {
      this.sourcePaused = true;
      this.src.pause();
    }
    if (!this.timer) this.pump();
  }

  /** Bytes waiting in the line. */
  get pending(): number {
    return this.queued;
  }

  private pump(): void {
    this.timer = null;
    if (this.stopped || this.waitingDrain || this.queued === 0) return;
    const rate = this.sim.bytesPerSecond;
    const now = performance.now();
    const due = rate === Infinity ? this.queued : Math.min(this.queued, Math.floor(((now - this.freeAt) * rate) / 1000));
    if (due > 0) {
      if (rate !== Infinity) this.freeAt += (due * 1000) / rate;
      this.deliver(this.takeBytes(due));
    }
    if (this.sourcePaused && this.queued <= this.sim.bufferBytes / 2) {
      this.sourcePaused = false;
      this.src.resume();
    }
    if (this.queued > 0 && !this.waitingDrain && !this.stopped) {
      const nextByte = this.freeAt + 1000 / rate - now;
      this.timer = setTimeout(() => this.pump(), Math.max(this.sim.tickMs, nextByte));
    }
  }

  private takeBytes(n: number): Buffer {
    const parts: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const head = this.queue[0];
      if (head.length <= left) {
        parts.push(head);
        this.queue.shift();
        left -= head.length;
      } else {
        parts.push(head.subarray(0, left));
        this.queue[0] = head.subarray(left);
        left = 0;
      }
    }
    this.queued -= n;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  private deliver(bytes: Buffer): void {
    if (this.sim.unplugged) {
      this.stats.lost += bytes.length;
      return;
    }
    let out = this.noise ? this.noise.apply(bytes, this.stats) : bytes;
    if (this.sim.impair) out = this.sim.impair(out, this.direction);
    this.stats.bytesOut += out.length;
    if (out.length === 0 || this.dst.destroyed) return;
    this.sim.emit('deliver', this.direction, out);
    if (!this.dst.write(out)) {
      this.waitingDrain = true;
      this.dst.once('drain', this.onDrain);
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.src.off('data', this.onData);
    this.dst.off('drain', this.onDrain);
    this.queue.length = 0;
    this.queued = 0;
  }
}

/**
 * Relays between two byte streams as a serial line carries them: at most
 * `bytesPerSecond` in each direction, reading a sender no faster than the
 * line sends (its source is paused while `bufferBytes` wait), with seeded
 * noise. `unplug()` pulls the cable: both ends keep sending at the line rate
 * and everything is lost until `plug()`.
 *
 * Events: 'deliver' (direction, bytes) for what leaves the line; 'error'
 * (error, which end) when an end fails.
 */
export class LineSimulator extends EventEmitter {
  bytesPerSecond: number;
  readonly bufferBytes: number;
  readonly tickMs: number;
  readonly impair?: (chunk: Buffer, direction: Direction) => Buffer;
  unplugged = false;
  private readonly lanes: Record<Direction, Lane>;
  private readonly onError = (error: Error) => this.emit('error', error);

  constructor(
    readonly a: Duplex,
    readonly b: Duplex,
    options: LineSimOptions = {},
  ) {
    super();
    this.bytesPerSecond = options.bytesPerSecond ?? (options.baud ? options.baud / 10 : 11_520);
    this.bufferBytes = options.bufferBytes ?? 4096;
    this.tickMs = options.tickMs ?? 4;
    this.impair = options.impair;
    // An 'error' nobody listens to must not crash the test process.
    this.on('error', () => undefined);
    a.on('error', this.onError);
    b.on('error', this.onError);
    this.lanes = { ab: new Lane(this, 'ab', a, b), ba: new Lane(this, 'ba', b, a) };
    this.setNoise(options.noise ?? null);
  }

  /** Per direction: bytes in and out, bits flipped, bytes dropped and lost. */
  get stats(): Record<Direction, LaneStats> {
    return { ab: this.lanes.ab.stats, ba: this.lanes.ba.stats };
  }

  /** Bytes waiting in the line, per direction. */
  pending(direction: Direction): number {
    return this.lanes[direction].pending;
  }

  /** Sets (or with null removes) the noise, on one direction or both; each sequence restarts from its seed. */
  setNoise(noise: NoiseOptions | null, direction?: Direction): void {
    for (const d of direction ? [direction] : (['ab', 'ba'] as const)) {
      this.lanes[d].noise = noise ? new Noise(noise, d === 'ab' ? 1 : 2) : null;
    }
  }

  /** Pulls the cable: what is on the line and what is sent from now on is lost. */
  unplug(): void {
    this.unplugged = true;
  }

  /** Plugs the cable back in. */
  plug(): void {
    this.unplugged = false;
  }

  /** Stops relaying (timers and listeners go; the streams stay open). */
  stop(): void {
    this.lanes.ab.stop();
    this.lanes.ba.stop();
    this.a.off('error', this.onError);
    this.b.off('error', this.onError);
  }

  /** Stops and destroys both streams. */
  close(): void {
    this.stop();
    this.a.on('error', () => undefined);
    this.b.on('error', () => undefined);
    this.a.destroy();
    this.b.destroy();
  }
}

// ---------------------------------------------------------------- a simulated serial line

export interface SimulatedLine {
  /** The device the agent opens (A1). */
  agentPath: string;
  /** The device the master opens (A2). */
  masterPath: string;
  /** Direction 'ab' is agent to master, 'ba' master to agent. */
  sim: LineSimulator;
  pairs: [SocatPair, SocatPair];
  close(): Promise<void>;
}

/**
 * Two socat pty pairs with a LineSimulator between them: the agent opens
 * `agentPath`, the master `masterPath`; the simulator opens the other two
 * ends (in pure JavaScript, so the relay never blocks the event loop).
 */
export async function simulatedLine(options: LineSimOptions = {}): Promise<SimulatedLine> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tether-line-'));
  const agentSide = await socatPair({ dir, names: ['A1', 'B1'] });
  const masterSide = await socatPair({ dir, names: ['A2', 'B2'] });
  const b1 = await openSerialLine(agentSide.b, { baud: 115200 });
  const b2 = await openSerialLine(masterSide.b, { baud: 115200 });
  const sim = new LineSimulator(b1, b2, options);
  return {
    agentPath: agentSide.a,
    masterPath: masterSide.a,
    sim,
    pairs: [agentSide, masterSide],
    async close() {
      sim.close();
      await agentSide.stop();
      await masterSide.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Two in-memory streams joined end to end: what one end writes, the other
 * reads, with backpressure (a write completes once the other end took it).
 * Ending or destroying one end ends the other's readable side.
 */
export function streamPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  /** A write to the other end, waiting until end i is read. */
  const waiting: Array<(() => void) | null> = [null, null];
  const make = (i: number) =>
    new Duplex({
      read() {
        const done = waiting[i];
        waiting[i] = null;
        done?.();
      },
      write(chunk: Buffer, _encoding, done) {
        const peer = ends[1 - i];
        if (peer.destroyed || peer.readableEnded) done();
        else if (peer.push(chunk)) done();
        else waiting[1 - i] = () => done();
      },
      final(done) {
        if (!ends[1 - i].destroyed) ends[1 - i].push(null);
        done();
      },
      destroy(error, done) {
        const peer = ends[1 - i];
        if (!peer.destroyed && !peer.readableEnded) peer.push(null);
        const blocked = waiting[1 - i];
        waiting[1 - i] = null;
        blocked?.();
        done(error);
      },
    });
  ends.push(make(0), make(1));
  return [ends[0], ends[1]];
}

/** The simulator between two in-memory stream pairs, for a test in one process: what `a` writes, `b` reads, and back. */
export function memoryLine(options: LineSimOptions = {}): { a: Duplex; b: Duplex; sim: LineSimulator } {
  const [a, simA] = streamPair();
  const [simB, b] = streamPair();
  return { a, b, sim: new LineSimulator(simA, simB, options) };
}
