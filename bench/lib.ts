/**
 * Shared pieces of the benchmarks: statistics, process memory from /proc,
 * a counting TCP relay that can be cut, an in-process hub with a tether-agent
 * child process, and table printing.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { TetherHub } from '../master-plugin/hub';
import { FrameAuth, deriveKeys, wireNumber } from '../wire/frame-auth';
import { encodeAuthenticatedFrame, encodeHandshakeFrame } from '../wire/framing';
import type { RemoteAgent } from '../master-plugin/remote';
import { REPO_ROOT, sleep } from '../test/helpers/support';
import { type TetherProcess, tetherAgent } from '../test/helpers/tether-procs';

/** Keys of a handshake that never happened: frames sized and timed as a session's. */
const BENCH_AUTH = new FrameAuth(deriveKeys(Buffer.from('bench'), Buffer.alloc(32, 1), Buffer.alloc(32, 2)), 'agent');

/** A frame as a session sends it after the handshake, at `number`; a handshake frame when `number` is null. */
export function benchFrame(body: Buffer, number: number | null): Buffer {
  return number === null ? encodeHandshakeFrame(body) : encodeAuthenticatedFrame(body, wireNumber(number), BENCH_AUTH.tag(number, body));
}

export const MB = 1e6;
export const MiB = 1024 * 1024;

/** Options every section gets. */
export interface BenchOptions {
  quick: boolean;
  log: (line: string) => void;
}

// ---------------------------------------------------------------- statistics

export function median(xs: number[]): number {
  return percentile(xs, 50);
}

/** Nearest-rank percentile (p in 0..100) of a non-empty list. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Milliseconds since `start` (performance.now()). */
export function since(start: number): number {
  return performance.now() - start;
}

export type Side = 'a' | 'b';

export interface Alternated<R> {
  /** The first run of each side, left out of the rest. */
  first: Record<Side, R>;
  a: R[];
  b: R[];
  /** measure(A) / measure(B) of each pair. */
  ratios: number[];
}

/**
 * Times A against B. First one run of each that the figures leave out: it
 * pays what only a first run pays (V8 compiling a Node side's hot path, the
 * page cache, a database's first growth). Then `reps` pairs, A first in even
 * pairs and B first in odd ones (A B, B A, A B ...), so that neither side
 * always runs on what the other left behind.
 */
export async function alternate<R>(reps: number, run: (side: Side) => Promise<R>, measure: (r: R) => number): Promise<Alternated<R>> {
  const first = { a: await run('a'), b: await run('b') };
  const out: Alternated<R> = { first, a: [], b: [], ratios: [] };
  for (let i = 0; i < reps; i++) {
    const order: Side[] = i % 2 === 0 ? ['a', 'b'] : ['b', 'a'];
    for (const side of order) out[side].push(await run(side));
    out.ratios.push(measure(out.a[i]) / measure(out.b[i]));
  }
  return out;
}

// ---------------------------------------------------------------- memory

export interface MemorySample {
  /** VmRSS: every resident page mapped, the executable's and shared libraries' included. */
  rss: number;
  /** Private (USS): the pages only this process has (its heap, stacks, written data). */
  uss: number;
  /** Proportional set size: private plus its share of shared pages. */
  pss: number;
}

/** Memory of a process in MB (10^6 bytes), from /proc/PID/status and smaps_rollup; undefined once it is gone. */
export function readMemory(pid: number): MemorySample | undefined {
  let status: string;
  let rollup: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    return undefined;
  }
  const kB = (text: string, name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? (Number(m[1]) * 1024) / MB : NaN;
  };
  return { rss: kB(status, 'VmRSS'), uss: kB(rollup, 'Private_Clean') + kB(rollup, 'Private_Dirty'), pss: kB(rollup, 'Pss') };
}

export function rssOf(pid: number): number {
  return readMemory(pid)?.rss ?? NaN;
}

/** Samples a process's memory every `intervalMs` until stopped: the highest RSS and USS. */
export class RssSampler {
  private readonly samples: MemorySample[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number, intervalMs = 20) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    const m = readMemory(this.pid);
    if (m && Number.isFinite(m.rss)) this.samples.push(m);
  }

  stop(): { max: number; maxUss: number; samples: number } {
    clearInterval(this.timer);
    this.sample();
    return { max: Math.max(...this.samples.map((m) => m.rss)), maxUss: Math.max(...this.samples.map((m) => m.uss)), samples: this.samples.length };
  }
}

/** The medians of a few samples over `ms`: settled figures for an idle process. */
export async function settledMemory(pid: number, ms = 1000): Promise<MemorySample> {
  const samples: MemorySample[] = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const m = readMemory(pid);
    if (m) samples.push(m);
    await sleep(Math.max(20, ms / 10));
  }
  return { rss: median(samples.map((m) => m.rss)), uss: median(samples.map((m) => m.uss)), pss: median(samples.map((m) => m.pss)) };
}

/** CPU time (user + system, ms) a process used so far, from /proc/PID/stat. */
export function cpuMsOf(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------- relay

/**
 * Counts WebSocket frames in one direction of a byte stream: the HTTP
 * upgrade first (up to its blank line), then RFC 6455 frame headers, their
 * payloads skipped.
 */
export class WsFrameCounter {
  frames = 0;
  private skip = 0;
  private head: Buffer = Buffer.alloc(0);
  /** The last bytes of the HTTP upgrade seen so far, until its end (CR LF CR LF). */
  private http: Buffer | null = Buffer.alloc(0);

  feed(chunk: Buffer): void {
    let at = 0;
    if (this.http) {
      const seen = Buffer.concat([this.http, chunk]);
      const end = seen.indexOf('\r\n\r\n');
      if (end === -1) {
        this.http = seen.subarray(-3);
        return;
      }
      at = end + 4 - this.http.length;
      this.http = null;
    }
    while (at < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - at);
        this.skip -= n;
        at += n;
        continue;
      }
      const before = this.head.length;
      const take = Math.min(14 - before, chunk.length - at);
      const head = Buffer.concat([this.head, chunk.subarray(at, at + take)]);
      const length = WsFrameCounter.headerLength(head);
      if (length === null || head.length < length) {
        this.head = head;
        at += take;
        continue;
      }
      const seven = head[1] & 0x7f;
      const payload = seven < 126 ? seven : seven === 126 ? head.readUInt16BE(2) : Number(head.readBigUInt64BE(2));
      this.frames++;
      this.head = Buffer.alloc(0);
      at += length - before;
      this.skip = payload;
    }
  }

  /** The header's length once its first two bytes are known. */
  private static headerLength(head: Buffer): number | null {
    if (head.length < 2) return null;
    const seven = head[1] & 0x7f;
    const masked = (head[1] & 0x80) !== 0;
    return 2 + (seven === 126 ? 2 : seven === 127 ? 8 : 0) + (masked ? 4 : 0);
  }
}

/**
 * A TCP relay on 127.0.0.1 that counts the bytes in each direction. `cut()`
 * closes every connection and stops listening (the client's reconnects are
 * refused); `restore()` listens on the same port again.
 */
export class CountingRelay {
  /** Client → target bytes, and back. */
  up = 0;
  down = 0;
  connections = 0;
  /** WebSocket frames each way, when the relay carries a WebSocket (countWsFrames). */
  wsUp = new WsFrameCounter();
  wsDown = new WsFrameCounter();
  countWsFrames = false;
  /** Sees every chunk it forwards, 'up' from the client and 'down' to it. */
  tap: ((direction: 'up' | 'down', chunk: Buffer) => void) | null = null;
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(private readonly targetPort: number) {}

  async start(port = 0): Promise<number> {
    const server = net.createServer((client) => this.onClient(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as net.AddressInfo).port;
    return this.port;
  }

  private onClient(client: net.Socket): void {
    this.connections++;
    const target = net.connect(this.targetPort, '127.0.0.1');
    client.setNoDelay(true);
    target.setNoDelay(true);
    for (const s of [client, target]) {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.on('data', (d: Buffer) => {
      this.up += d.length;
      if (this.countWsFrames) this.wsUp.feed(d);
      this.tap?.('up', d);
      if (!target.write(d)) client.pause();
    });
    target.on('drain', () => client.resume());
    target.on('data', (d: Buffer) => {
      this.down += d.length;
      if (this.countWsFrames) this.wsDown.feed(d);
      this.tap?.('down', d);
      if (!client.write(d)) target.pause();
    });
    client.on('drain', () => target.resume());
    client.once('close', () => target.destroy());
    target.once('close', () => client.destroy());
  }

  reset(): void {
    this.up = 0;
    this.down = 0;
    this.wsUp.frames = 0;
    this.wsDown.frames = 0;
  }

  /** WebSocket messages both ways since the last reset. */
  get wsFrames(): number {
    return this.wsUp.frames + this.wsDown.frames;
  }

  get total(): number {
    return this.up + this.down;
  }

  /** Drops every connection at once and refuses new ones. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async restore(): Promise<void> {
    if (!this.server) await this.start(this.port);
  }

  async close(): Promise<void> {
    await this.cut();
  }
}

// ---------------------------------------------------------------- hub + agent

export const AGENT_BINARY = path.join(REPO_ROOT, 'dist', `tether-agent-linux-${os.arch()}`);

export interface HubAndAgent {
  hub: TetherHub;
  remote: RemoteAgent;
  agent: TetherProcess & { basedir: string };
  relay: CountingRelay | null;
  close(): Promise<void>;
}

/**
 * An in-process TetherHub and a tether-agent child process (Node-run, or the
 * single binary), optionally through a counting relay.
 */
export async function hubAndAgent(opts: { binary?: string; relay?: boolean; grace?: number } = {}): Promise<HubAndAgent> {
  const secret = 'bench-secret';
  const hub = new TetherHub({ workers: { bench: secret }, grace: opts.grace });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const relay = opts.relay ? new CountingRelay(address.port) : null;
  const port = relay ? await relay.start() : address.port;
  const agent = await tetherAgent({ port, name: 'bench', secret, binary: opts.binary });
  try {
    await agent.start();
    const remote = await waitForAgentOrExit(hub, 'bench', agent, 30_000);
    return {
      hub,
      remote,
      agent,
      relay,
      async close() {
        await agent.stop();
        await hub.close();
        await relay?.close();
        fs.rmSync(agent.dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await agent.stop();
    await hub.close();
    await relay?.close();
    throw new Error(`${(error as Error).message}\n${agent.output}`);
  }
}

/** hub.waitForAgent, failing at once when the agent process has exited. */
export async function waitForAgentOrExit(hub: TetherHub, name: string, agent: TetherProcess, timeoutMs: number): Promise<RemoteAgent> {
  let timer: NodeJS.Timeout | undefined;
  const exited = new Promise<never>((_, reject) => {
    timer = setInterval(() => {
      if (agent.pid === undefined || !fs.existsSync(`/proc/${agent.pid}`)) reject(new Error(`${agent.name} exited`));
    }, 200);
  });
  try {
    return await Promise.race([hub.waitForAgent(name, timeoutMs), exited]);
  } finally {
    clearInterval(timer);
  }
}

/** Runs a local shell command line; resolves with its wall time in ms (rejects on a non-zero exit). */
export function timeLocal(command: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const ms = since(start);
      if (code === 0) resolve(ms);
      else reject(new Error(`${command}: exit ${String(code)} ${stderr}`));
    });
  });
}

/**
 * A command line writing exactly `bytes` of log-like text (64-byte lines) to
 * stdout: fast enough (yes(1) runs at GB/s) that the consumer sets the pace.
 */
export function textProducer(bytes: number, tag = 'bench'): string {
  const line = `${tag} line of build output: compiling src/module/file.c -O2 -Wall`.padEnd(63, '.').slice(0, 63);
  return `yes '${line}' | head -c ${bytes}`;
}

/** The exact bytes textProducer(bytes, tag) writes. */
export function textProducerBytes(bytes: number, tag = 'bench'): Buffer {
  const line = `${tag} line of build output: compiling src/module/file.c -O2 -Wall`.padEnd(63, '.').slice(0, 63) + '\n';
  const out = Buffer.allocUnsafe(bytes);
  const unit = Buffer.from(line);
  for (let at = 0; at < bytes; at += unit.length) unit.copy(out, at, 0, Math.min(unit.length, bytes - at));
  return out;
}

/** The scale benchmark's worker names. */
export function agentName(i: number): string {
  return `agent-${String(i).padStart(3, '0')}`;
}

/** sha256 (hex) of textProducerBytes(bytes, tag), without holding them all. */
export function textProducerHash(bytes: number, tag = 'bench'): string {
  const block = textProducerBytes(64 * 1024, tag); // a whole number of 64-byte lines
  const hash = createHash('sha256');
  for (let at = 0; at < bytes; at += block.length) hash.update(block.subarray(0, Math.min(block.length, bytes - at)));
  return hash.digest('hex');
}

// ---------------------------------------------------------------- output

export type Cell = string | number | null | undefined;

function cellText(c: Cell): string {
  if (c === null || c === undefined) return '-';
  if (typeof c === 'number') {
    if (!Number.isFinite(c)) return String(c);
    if (Number.isInteger(c)) return String(c);
    const abs = Math.abs(c);
    return abs >= 100 ? c.toFixed(0) : abs >= 10 ? c.toFixed(1) : abs >= 1 ? c.toFixed(2) : c.toFixed(3);
  }
  return c;
}

/** A Markdown table (it reads well in a terminal too). */
export function table(header: string[], rows: Cell[][]): string {
  const text = rows.map((r) => r.map(cellText));
  const widths = header.map((h, i) => Math.max(h.length, ...text.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...text.map(line)].join('\n');
}
